// tokenizer.json pre-tokenizers (tokenizer/hf_pipeline.h): Split, Metaspace, Digits, ByteLevel
// and Sequence, splitting pieces of text as huggingface/tokenizers' pre-tokenizers do.
#include "tokenizer/hf_pipeline.h"

#include <algorithm>

#include "base/utf8.h"

namespace sae::tok {

namespace {

// HF's SplitDelimiterBehavior applied to the (begin, end, is_match) spans covering a piece.
enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
  size_t b, e;
  bool match;
};

Behavior parse_behavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return Behavior::Removed;
  if (s == "Isolated") return Behavior::Isolated;
  if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::MergedWithNext;
  if (s == "Contiguous") return Behavior::Contiguous;
  unsupported(where, "split behavior \"" + s + "\"");
}

// Cuts `p` at the spans, as NormalizedString::split does, appending the non-empty parts to out.
void split_piece(const Piece& p, std::vector<Span> spans, Behavior behavior, bool invert,
                 std::vector<Piece>& out) {
  if (invert)
    for (auto& s : spans) s.match = !s.match;
  std::vector<Span> parts;  // match flag here: "remove this part"
  switch (behavior) {
    case Behavior::Isolated:
      for (auto& s : spans) parts.push_back({s.b, s.e, false});
      break;
    case Behavior::Removed:
      parts = spans;
      break;
    case Behavior::MergedWithPrevious: {
      bool prev_match = false;
      for (auto& s : spans) {
        if (s.match && !prev_match && !parts.empty())
          parts.back().e = s.e;
        else
          parts.push_back({s.b, s.e, false});
        prev_match = s.match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev_match = false;  // in reverse order: "the span after this one was a match"
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.match && !prev_match && !parts.empty())
          parts.back().b = s.b;
        else
          parts.push_back({s.b, s.e, false});
        prev_match = s.match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
    case Behavior::Contiguous: {
      bool prev_match = false;
      for (auto& s : spans) {
        if (s.match == prev_match && !parts.empty())
          parts.back().e = s.e;
        else
          parts.push_back({s.b, s.e, false});
        prev_match = s.match;
      }
      break;
    }
  }
  for (auto& s : parts)
    if (!s.match && s.e > s.b) out.push_back(Piece{p.text.substr(s.b, s.e - s.b), p.at_start && s.b == 0});
}

// Spans from a pattern's matches: the gaps between matches are non-matches.
template <class MatchFn>
std::vector<Span> spans_of(std::string_view s, MatchFn&& each_match) {
  std::vector<Span> spans;
  size_t prev = 0;
  each_match([&](size_t b, size_t e) {
    if (prev != b) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  });
  if (prev != s.size()) spans.push_back({prev, s.size(), false});
  return spans;
}

struct SplitPT : PreTokenizer {
  std::unique_ptr<Pattern> pattern;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (const auto& p : pieces) {
      auto spans = spans_of(p.text, [&](auto&& f) { pattern->matches(p.text, f); });
      split_piece(p, std::move(spans), behavior, invert, out);
    }
    pieces.swap(out);
  }
};

struct MetaspacePT : PreTokenizer {
  std::string replacement = kSpaceMarker;
  enum class Prepend { Always, Never, First } prepend = Prepend::Always;
  bool split = true;
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (auto& p : pieces) {
      std::string t = replace_all(p.text, " ", replacement);
      bool starts = t.compare(0, replacement.size(), replacement) == 0;
      if (!starts && (prepend == Prepend::Always || (prepend == Prepend::First && p.at_start)))
        t.insert(0, replacement);
      Piece q{std::move(t), p.at_start};
      if (!split) {
        out.push_back(std::move(q));
        continue;
      }
      auto spans = spans_of(q.text, [&](auto&& f) {
        for (size_t pos = q.text.find(replacement); pos != std::string::npos;
             pos = q.text.find(replacement, pos + replacement.size()))
          f(pos, pos + replacement.size());
      });
      split_piece(q, std::move(spans), Behavior::MergedWithNext, false, out);
    }
    pieces.swap(out);
  }
};

struct DigitsPT : PreTokenizer {
  bool individual = false;
  Regex digit{R"(\p{N})", "built-in"};  // Rust's char::is_numeric: Nd, Nl, No
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const auto& p : pieces) {
      auto spans = spans_of(p.text, [&](auto&& f) { digit.for_each_match(p.text, f); });
      split_piece(p, std::move(spans), individual ? Behavior::Isolated : Behavior::Contiguous,
                  false, out);
    }
    pieces.swap(out);
  }
};

// ByteLevel as a pre-tokenizer: optional prefix space and GPT-2 regex split. Mapping bytes to
// characters is left out: the BPE model of a byte-level tokenizer works on raw bytes directly.
struct ByteLevelPT : PreTokenizer {
  bool add_prefix_space = false;
  std::unique_ptr<Regex> regex;  // null when use_regex is false
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 8);
    for (auto& p : pieces) {
      if (add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (!regex) {
        out.push_back(std::move(p));
        continue;
      }
      // Isolated split: matches and the gaps between them (the GPT-2 pattern leaves none).
      size_t prev = 0;
      auto emit = [&](size_t b, size_t e) {
        if (e > b) out.push_back(Piece{p.text.substr(b, e - b), p.at_start && b == 0});
      };
      regex->for_each_match(p.text, [&](size_t b, size_t e) {
        emit(prev, b);
        emit(b, e);
        prev = e;
      });
      emit(prev, p.text.size());
    }
    pieces.swap(out);
  }
};

struct PTSequence : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  void apply(std::vector<Piece>& pieces) const override {
    for (auto& s : steps) s->apply(pieces);
  }
};

}  // namespace

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& where,
                                                  bool& byte_level) {
  if (j.is_null()) return nullptr;
  std::string type = get_string(j, "type", where);
  std::string w = where + " pre_tokenizer " + type;
  if (byte_level) unsupported(where, "a pre-tokenizer after ByteLevel");
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPT>();
    p->add_prefix_space = get_bool(j, "add_prefix_space", true);
    if (get_bool(j, "use_regex", true)) p->regex = std::make_unique<Regex>(kGpt2Pattern, w);
    byte_level = true;
    return p;
  }
  if (type == "Split") {
    auto p = std::make_unique<SplitPT>();
    p->pattern = std::make_unique<Pattern>(j.value("pattern", json()), w);
    p->behavior = parse_behavior(get_string(j, "behavior", w, "Isolated"), w);
    p->invert = get_bool(j, "invert", false);
    return p;
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspacePT>();
    p->replacement = get_string(j, "replacement", w, p->replacement);
    std::string scheme = get_string(j, "prepend_scheme", w, "");
    if (scheme.empty())  // older files: add_prefix_space true/false
      p->prepend = get_bool(j, "add_prefix_space", true) ? MetaspacePT::Prepend::Always
                                                         : MetaspacePT::Prepend::Never;
    else if (scheme == "always")
      p->prepend = MetaspacePT::Prepend::Always;
    else if (scheme == "never")
      p->prepend = MetaspacePT::Prepend::Never;
    else if (scheme == "first")
      p->prepend = MetaspacePT::Prepend::First;
    else
      unsupported(w, "prepend_scheme \"" + scheme + "\"");
    p->split = get_bool(j, "split", true);
    return p;
  }
  if (type == "Digits") {
    auto p = std::make_unique<DigitsPT>();
    p->individual = get_bool(j, "individual_digits", false);
    return p;
  }
  if (type == "WhitespaceSplit") {
    auto p = std::make_unique<SplitPT>();
    p->pattern = std::make_unique<Pattern>(json{{"Regex", R"(\s+)"}}, w);
    p->behavior = Behavior::Removed;
    return p;
  }
  if (type == "Sequence") {
    auto p = std::make_unique<PTSequence>();
    for (const auto& s : j.value("pretokenizers", json::array()))
      if (auto step = parse_pre_tokenizer(s, where, byte_level)) p->steps.push_back(std::move(step));
    return p;
  }
  unsupported(where, "pre_tokenizer \"" + type + "\"");
}

const Regex* single_isolated_regex(const PreTokenizer* p) {
  if (auto* b = dynamic_cast<const ByteLevelPT*>(p)) return b->add_prefix_space ? nullptr : b->regex.get();
  auto* seq = dynamic_cast<const PTSequence*>(p);
  if (!seq) return nullptr;
  if (seq->steps.size() == 1) return single_isolated_regex(seq->steps[0].get());
  if (seq->steps.size() != 2) return nullptr;
  auto* split = dynamic_cast<const SplitPT*>(seq->steps[0].get());
  auto* b = dynamic_cast<const ByteLevelPT*>(seq->steps[1].get());
  if (!split || !b || b->add_prefix_space || b->regex || split->invert ||
      split->behavior != Behavior::Isolated || !split->pattern->regex)
    return nullptr;
  return split->pattern->regex.get();
}

}  // namespace sae::tok
