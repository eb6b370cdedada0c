// Pieces the tokenizer implementations share; not part of the public interface (tokenizer.h).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace sae::tok {

using json = nlohmann::json;

// ---- Unicode helpers (ICU) ----
enum class NormForm { NFC, NFD, NFKC, NFKD };
std::string unicode_normalize(std::string_view s, NormForm form);
std::string unicode_lowercase(std::string_view s);

// ---- Regular expressions (PCRE2, UTF + UCP, JIT) ----
// Patterns from tokenizer.json are written for Oniguruma, the engine HF's `tokenizers` uses.
// PCRE2 agrees on \p{L}, \p{N}, lookahead and (?i:...) case folding; its \s also matches
// U+180E, which Oniguruma's (the Unicode White_Space set) does not, so \s and \S are rewritten to
// the explicit White_Space set.
class Regex {
 public:
  // `where` names the file and field for the error message of a pattern PCRE2 rejects.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Calls f(start, end) for every non-overlapping match in `s` (valid UTF-8), left to right. An
  // empty match moves the search on by one character.
  void for_each_match(std::string_view s, const std::function<void(size_t, size_t)>& f) const;
  // Whether the pattern matches somewhere in s.
  bool search(std::string_view s) const;

  static std::string translate_oniguruma(const std::string& pattern);

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

// The GPT-2 pre-tokenizer pattern (ByteLevel with use_regex: true).
extern const char* const kGpt2Pattern;

// GPT-2's reversible byte <-> printable character map (bytes_to_unicode).
struct ByteLevelMap {
  uint32_t byte_to_cp[256];
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteLevelMap();
  static const ByteLevelMap& get();
  // Maps a byte-level token string ("Ġthe") back to raw bytes; false when some character is not
  // in the map (then the token is not a byte-level string, e.g. an added token with spaces).
  bool to_bytes(std::string_view token, std::string& out) const;
};

// ---- Added (special) tokens found in text, HF AddedVocabulary semantics ----
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Splits text on added tokens: leftmost match, longest at that position; single_word, lstrip and
// rstrip as HF's tokenizers apply them.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  struct Segment {
    size_t begin, end;
    int32_t id;  // -1: plain text
  };
  // Segments covering `text` in order; empty text segments are left out.
  std::vector<Segment> split(std::string_view text, bool parse_special) const;

 private:
  std::vector<AddedToken> tokens_;
  std::vector<std::vector<int>> by_first_byte_;  // indexes into tokens_, longest first
};

// sentencepiece's space marker, U+2581 ("▁"), as tokenizer.json and tokenizer.model spell it.
constexpr const char* kSpaceMarker = "\xE2\x96\x81";

// `s` with every occurrence of `from` (non-empty) replaced by `to`, left to right.
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

// Reads a token string from a tokenizer_config.json entry: "tok" or {"content": "tok", ...}.
// Empty when absent or null.
std::string config_token(const json& cfg, const char* key);

// ---- BPE ----
// Merge ranks and the merge loop. Symbols are token ids; a word is first cut into its initial
// symbols (bytes for byte-level BPE, characters otherwise), then merged pair by pair, lowest rank
// first and leftmost among equal ranks, exactly as HF's tokenizers (models/bpe/word.rs) do.
class BpeMerges {
 public:
  struct Merge {
    int32_t rank, id;
  };
  void reserve(size_t n);
  void add(int32_t left, int32_t right, int32_t rank, int32_t merged);  // keeps the first rank
  const Merge* find(int32_t left, int32_t right) const;
  size_t size() const { return count_; }

  // Merges `syms` in place. merge() picks the method by length; the two methods give identical
  // results (tested) and are exposed for the tests and the benchmark.
  void merge(std::vector<int32_t>& syms) const;
  void merge_scan(std::vector<int32_t>& syms) const;  // O(n^2), fastest for short words
  void merge_heap(std::vector<int32_t>& syms) const;  // O(n log n) with a heap and a linked list

 private:
  static uint64_t key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  // Open addressing, linear probing; kEmpty marks a free slot (no real pair has it).
  static constexpr uint64_t kEmpty = ~0ULL;
  std::vector<uint64_t> keys_;
  std::vector<Merge> vals_;
  size_t mask_ = 0, count_ = 0;
  void grow();
};

// Word -> ids cache: a direct-mapped table of fixed-size slots (no allocation, one probe), for
// the short words that make up almost all text; longer words and words of many tokens are not
// cached. A new word simply overwrites the slot it hashes to. Slots are guarded by a few striped
// mutexes so that threads can share one tokenizer.
class WordCache {
 public:
  static constexpr size_t kMaxWord = 30, kMaxIds = 8;
  explicit WordCache(size_t slots = 1 << 16);
  bool get(std::string_view word, std::vector<int32_t>& out) const;
  void put(std::string_view word, const std::vector<int32_t>& ids) const;
  void set_enabled(bool on) { enabled_ = on; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint8_t len = 0, n = 0;  // len 0: empty (empty words are never cached)
    char word[kMaxWord];
    int32_t ids[kMaxIds];
  };
  static constexpr int kStripes = 64;
  static uint64_t hash(std::string_view w);
  mutable std::vector<Slot> slots_;
  mutable std::mutex stripes_[kStripes];
  size_t mask_;
  bool enabled_ = true;
};

// ---- Implementations, made by the loader (tokenizer.cpp) ----
// What the tokenizer file itself says about the special tokens HF adds around a text.
struct FileSpecials {
  bool has_template = false;  // a post_processor that decides (TemplateProcessing, Roberta...)
  std::vector<int32_t> prefix, suffix;
  // Without a template or tokenizer_config.json: what the format implies (sentencepiece models
  // know their BOS/EOS, and HF's LlamaTokenizer adds BOS by default).
  int32_t default_bos = -1, default_eos = -1;
  bool default_add_bos = false;
};

class TokenizerBase : public Tokenizer {
 public:
  void set_identity(const std::string& kind, const std::string& source, std::string_view bytes);
  void set_specials(int32_t bos, int32_t eos, bool add_bos, bool add_eos) {
    bos_id_ = bos;
    eos_id_ = eos;
    add_bos_ = add_bos;
    add_eos_ = add_eos;
  }
  void set_vocab_size(int32_t n) { vocab_size_ = n; }
  virtual FileSpecials file_specials() const { return {}; }
  // Turns the word cache off (the benchmark measures the cold path with it).
  virtual void set_cache(bool) {}
};

// tokenizer.json (BOS/EOS are decided by the loader, from tokenizer_config.json).
std::unique_ptr<TokenizerBase> make_hf_tokenizer(const std::string& path);
// The same pipeline from an in-memory tokenizer.json (tests, and vocab.json + merges.txt).
std::unique_ptr<TokenizerBase> make_hf_tokenizer_from_json(const json& j, const std::string& where);
// vocab.json + merges.txt, the GPT-2 layout: byte-level BPE with the GPT-2 pattern.
std::unique_ptr<TokenizerBase> make_gpt2_files_tokenizer(const std::string& vocab_path,
                                                         const std::string& merges_path,
                                                         const json& cfg);
// tokenizer.model through libsentencepiece.
std::unique_ptr<TokenizerBase> make_sentencepiece_tokenizer(const std::string& path,
                                                            const json& cfg);

}  // namespace sae::tok
