// Finding added and special tokens ("<|endoftext|>") in text, with the semantics of HF's
// AddedVocabulary (tokenizers/src/tokenizer/added_vocabulary.rs): leftmost match, longest at that
// position, non-overlapping; single_word tokens only between non-word characters; lstrip/rstrip
// tokens swallow the whitespace beside them.
#include <algorithm>

#include "base/utf8.h"
#include "tokenizer/internal.h"

namespace sae::tok {

namespace {
// Rust regex's Unicode \w, which HF uses for single_word.
bool is_word_char(uint32_t cp) {
  static const Regex word(R"(^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$)", "built-in");
  std::string s;
  utf8_append(s, cp);
  return word.search(s);
}

// Code point that ends at byte `end` (exclusive) of valid UTF-8 text.
uint32_t cp_before(std::string_view s, size_t end) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  size_t i = b;
  return utf8_next(s, i);
}
}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : by_first_byte_(256) {
  for (auto& t : tokens)
    if (!t.content.empty()) tokens_.push_back(std::move(t));
  for (size_t i = 0; i < tokens_.size(); ++i)
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(static_cast<int>(i));
  for (auto& v : by_first_byte_)
    std::stable_sort(v.begin(), v.end(), [&](int a, int b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
}

std::vector<AddedTokenMatcher::Segment> AddedTokenMatcher::split(std::string_view text,
                                                                 bool parse_special) const {
  std::vector<Segment> out;
  size_t start_offset = 0, i = 0, n = text.size();
  if (!tokens_.empty()) {
    while (i < n) {
      const auto& cands = by_first_byte_[static_cast<unsigned char>(text[i])];
      const AddedToken* hit = nullptr;
      for (int c : cands) {
        const AddedToken& t = tokens_[c];
        if (!parse_special && t.special) continue;
        if (text.compare(i, t.content.size(), t.content) == 0) {
          hit = &t;
          break;
        }
      }
      if (!hit) {
        ++i;
        continue;
      }
      size_t start = i, stop = i + hit->content.size();
      i = stop;  // the search goes on after this match, whether it is kept or not
      if (hit->single_word) {
        bool word_before = start > 0 && is_word_char(cp_before(text, start));
        size_t j = stop;
        bool word_after = stop < n && is_word_char(utf8_next(text, j));
        if (word_before || word_after) continue;
      }
      if (hit->lstrip) {
        size_t s = start;
        while (s > start_offset) {
          uint32_t cp = cp_before(text, s);
          if (!unicode_is_whitespace(cp)) break;
          size_t len = 1;
          while ((static_cast<unsigned char>(text[s - len]) & 0xC0) == 0x80) ++len;
          s -= len;
        }
        start = s;
      }
      if (hit->rstrip) {
        while (stop < n) {
          size_t j = stop;
          if (!unicode_is_whitespace(utf8_next(text, j))) break;
          stop = j;
        }
        i = stop;
      }
      if (start_offset < start) out.push_back(Segment{start_offset, start, -1});
      out.push_back(Segment{start, stop, hit->id});
      start_offset = stop;
    }
  }
  if (start_offset < n) out.push_back(Segment{start_offset, n, -1});
  return out;
}

std::string config_token(const json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key)) return "";
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return "";
}

}  // namespace sae::tok
