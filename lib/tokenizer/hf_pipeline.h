// The pipeline stages of a Hugging Face tokenizer.json that run before and after the BPE model
// (tokenizer/hf.cpp): normalizers (hf_normalizers.cpp), pre-tokenizers (hf_pre_tokenizers.cpp)
// and decoders (hf_decoders.cpp), each parsed from its JSON object and applied as HF's
// `tokenizers` library applies it. A component not listed in docs/tokenizers.md is refused at
// load time with a message naming it, never approximated.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/errors.h"
#include "tokenizer/internal.h"

namespace sae::tok {

// A piece of text flowing through the pipeline. at_start: it begins at offset 0 of the original
// text (Metaspace's prepend_scheme "first" needs to know).
struct Piece {
  std::string text;
  bool at_start;
};

[[noreturn]] inline void unsupported(const std::string& where, const std::string& what) {
  throw InputError(where + ": " + what + " is not supported (see docs/tokenizers.md)");
}

// j[key] as a string: dflt when absent or null, an InputError naming `where` when not a string.
inline std::string get_string(const json& j, const char* key, const std::string& where, const std::string& dflt = "") {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_string()) throw InputError(where + ": \"" + key + "\" is not a string");
  return j[key].get<std::string>();
}

// j[key] as a bool: dflt when absent, null or not a bool.
inline bool get_bool(const json& j, const char* key, bool dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (j[key].is_boolean()) return j[key].get<bool>();
  return dflt;
}

// A split pattern: {"String": "..."} (literal) or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;

  Pattern(const json& j, const std::string& where) {
    if (j.is_string()) {
      literal = j.get<std::string>();
    } else if (j.is_object() && j.contains("String") && j["String"].is_string()) {
      literal = j["String"].get<std::string>();
    } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
      regex = std::make_unique<Regex>(j["Regex"].get<std::string>(), where);
    } else {
      throw InputError(where + ": pattern is neither {\"String\": ...} nor {\"Regex\": ...}");
    }
  }

  // Calls f(begin, end) for each non-overlapping match, left to right.
  template <class F>
  void matches(std::string_view s, F&& f) const {
    if (regex) {
      regex->for_each_match(s, f);
      return;
    }
    if (literal.empty()) return;
    for (size_t pos = s.find(literal); pos != std::string_view::npos;
         pos = s.find(literal, pos + literal.size()))
      f(pos, pos + literal.size());
  }
};

// ---- normalizers (hf_normalizers.cpp)

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};

// null for a null object (no normalizer).
std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& where);

// Every match of the pattern replaced by `content`. The Replace decoder applies it to each token.
struct Replace : Normalizer {
  std::unique_ptr<Pattern> pattern;
  std::string content;
  void apply(std::string& s) const override {
    std::string out;
    size_t last = 0;
    bool any = false;
    pattern->matches(s, [&](size_t b, size_t e) {
      out.append(s, last, b - last);
      out += content;
      last = e;
      any = true;
    });
    if (!any) return;
    out.append(s, last, std::string::npos);
    s.swap(out);
  }
};

// ---- pre-tokenizers (hf_pre_tokenizers.cpp)

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};

// Parses a pre-tokenizer (null for a null object); sets byte_level when a ByteLevel step is present
// (it must be last).
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& where, bool& byte_level);

// The regex when the pre-tokenizer is nothing but one Isolated regex split over byte-level text
// (GPT-2's ByteLevel, or Llama 3's Split + ByteLevel without regex): then encode() can hand the
// matches to the model as views into the text, with no piece copied. Else null.
const Regex* single_isolated_regex(const PreTokenizer* p);

// ---- decoders (hf_decoders.cpp)

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

// null for a null object (no decoder).
std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& where);

// Whether a decoder is ByteLevel alone (possibly in a one-step Sequence): then decode() can
// concatenate precomputed bytes per id.
bool is_plain_byte_level(const json& j);

// The byte of a "<0xNN>" token (byte fallback), or -1 for any other token.
int byte_token(std::string_view t);

}  // namespace sae::tok
