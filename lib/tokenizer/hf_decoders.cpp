// tokenizer.json decoders (tokenizer/hf_pipeline.h): ByteLevel, Replace, ByteFallback, Fuse, Strip,
// Metaspace and Sequence, turning token strings back into text as huggingface/tokenizers does.
#include "tokenizer/hf_pipeline.h"

#include "base/utf8.h"

namespace sae::tok {

int byte_token(std::string_view t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

namespace {

struct ByteLevelDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    const ByteLevelMap& m = ByteLevelMap::get();
    std::string all, bytes;
    for (auto& t : tokens) {
      if (m.to_bytes(t, bytes))
        all += bytes;
      else
        all += t;  // not a byte-level string (an added token): its text as is, like HF
    }
    tokens.assign(1, std::move(all));
  }
};

struct ReplaceDec : Decoder {
  Replace r;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) r.apply(t);
  }
};

// "<0x41>" tokens become their byte. HF turns bytes that do not form valid UTF-8 into U+FFFD
// here; decode() keeps the bytes (docs/tokenizers.md).
struct ByteFallbackDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    bool prev_byte = false;
    for (auto& t : tokens) {
      int b = byte_token(t);
      if (b >= 0) {
        if (!prev_byte) out.emplace_back();
        out.back() += static_cast<char>(b);
        prev_byte = true;
      } else {
        out.push_back(std::move(t));
        prev_byte = false;
      }
    }
    tokens.swap(out);
  }
};

struct FuseDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

struct StripDec : Decoder {
  std::string content;
  int start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    if (content.empty()) return;
    for (auto& t : tokens) {
      size_t b = 0, e = t.size();
      for (int k = 0; k < start && t.compare(b, content.size(), content) == 0 && b < e; ++k)
        b += content.size();
      for (int k = 0; k < stop && e >= b + content.size() &&
                      t.compare(e - content.size(), content.size(), content) == 0;
           ++k)
        e -= content.size();
      t = t.substr(b, e - b);
    }
  }
};

struct MetaspaceDec : Decoder {
  std::string replacement = kSpaceMarker;
  bool strip_first = true;  // prepend_scheme other than "never": the first token lost its space
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string_view t = tokens[i];
      if (i == 0 && strip_first && t.compare(0, replacement.size(), replacement) == 0)
        t.remove_prefix(replacement.size());
      tokens[i] = replace_all(t, replacement, " ");
    }
  }
};

struct DecSequence : Decoder {
  std::vector<std::unique_ptr<Decoder>> steps;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& s : steps) s->apply(tokens);
  }
};

}  // namespace

std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  std::string type = get_string(j, "type", where);
  std::string w = where + " decoder " + type;
  if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (type == "Fuse") return std::make_unique<FuseDec>();
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDec>();
    d->r.pattern = std::make_unique<Pattern>(j.value("pattern", json()), w);
    d->r.content = get_string(j, "content", w);
    return d;
  }
  if (type == "Strip") {
    auto d = std::make_unique<StripDec>();
    d->content = get_string(j, "content", w, " ");
    d->start = j.value("start", 0);
    d->stop = j.value("stop", 0);
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDec>();
    d->replacement = get_string(j, "replacement", w, d->replacement);
    std::string scheme = get_string(j, "prepend_scheme", w, "");
    d->strip_first = scheme.empty() ? get_bool(j, "add_prefix_space", true) : scheme != "never";
    return d;
  }
  if (type == "Sequence") {
    auto d = std::make_unique<DecSequence>();
    for (const auto& s : j.value("decoders", json::array()))
      if (auto step = parse_decoder(s, where)) d->steps.push_back(std::move(step));
    return d;
  }
  unsupported(where, "decoder \"" + type + "\"");
}

bool is_plain_byte_level(const json& j) {
  if (j.is_null()) return false;
  std::string type = j.value("type", "");
  if (type == "ByteLevel") return true;
  if (type == "Sequence") {
    const json& d = j.value("decoders", json::array());
    return d.size() == 1 && is_plain_byte_level(d[0]);
  }
  return false;
}

}  // namespace sae::tok
