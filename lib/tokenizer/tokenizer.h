// Exact tokenizers for Hugging Face model directories (docs/tokenizers.md).
//
// Tokenizer::load(dir) picks the model's own tokenizer:
//   - tokenizer.json (Hugging Face `tokenizers`, what AutoTokenizer uses): BPE as GPT-2, Llama 3,
//     Qwen2, SmolLM use it (byte-level, pre-tokenizer regex through PCRE2), and the
//     sentencepiece-style BPE layout of Llama 2 / Mistral / TinyLlama (Metaspace or
//     Prepend+Replace, byte fallback);
//   - tokenizer.model (sentencepiece, through libsentencepiece) when there is no tokenizer.json;
//   - vocab.json + merges.txt (the older GPT-2 layout) when neither is present.
// tokenizer_config.json (and config.json) decide the BOS/EOS tokens and whether HF adds them.
//
// All methods are const and safe to call from several threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "base/errors.h"
#include "base/utf8.h"  // Utf8Error, utf8_replace_invalid

namespace sae {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads the tokenizer of a Hugging Face model directory. Missing or malformed files, and
  // tokenizer.json components this implementation does not handle, throw InputError naming the
  // file and what is wrong (never a silently different tokenization).
  static std::unique_ptr<Tokenizer> load(const std::string& model_dir);

  // Token ids of `text`, without BOS/EOS. Special and added tokens written in the text (e.g.
  // "<|endoftext|>") map to their ids, as HF's tokenizer(text) does; with parse_special = false
  // tokens marked special are tokenized as plain text (HF's split_special_tokens=True; added tokens
  // that are not special still match). Throws Utf8Error on invalid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;

  // encode() plus the BOS/EOS that HF's tokenizer(text) adds (add_special_tokens=True): BOS when
  // add_bos(), EOS when add_eos().
  std::vector<int32_t> encode_with_special(std::string_view text) const;

  // The bytes the ids stand for, concatenated (special tokens as their text). decode(encode(x))
  // == x for valid UTF-8 x, except where the tokenizer itself normalizes (NFC, sentencepiece's
  // whitespace rules, the leading space sentencepiece adds and removes). Ids that cut a character
  // in two give bytes that are not valid UTF-8 on their own. Throws InputError on ids outside
  // [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;

  // One token as readable, valid UTF-8 text for dashboards and debugging: leading-space markers
  // (Ġ, ▁) become spaces, bytes that are not a whole UTF-8 character are shown as "<0xE6>".
  virtual std::string token_text(int32_t id) const = 0;

  // Id of a token given its vocabulary string (as stored: "Ġthe", "▁the", "<|endoftext|>"), or -1.
  virtual int32_t token_id(const std::string& token) const = 0;

  int32_t vocab_size() const { return vocab_size_; }  // 1 + the largest id
  int32_t bos_id() const { return bos_id_; }          // -1 when the model has none
  int32_t eos_id() const { return eos_id_; }          // -1 when the model has none
  // Whether HF's tokenizer(text) prepends BOS / appends EOS (tokenizer_config.json add_bos_token /
  // add_eos_token, else tokenizer.json's post_processor template, else the sentencepiece default:
  // BOS yes). Note: TransformerLens and SAELens prepend BOS for every model (prepend_bos=True), and
  // the reference token ids in ../shared do too, also for GPT-2 where add_bos() is false.
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }

  // "hf-bpe", "sentencepiece" or "gpt2-bpe" (vocab.json + merges.txt).
  const std::string& kind() const { return kind_; }
  // For stream headers: "<kind>:sha256:<hex digest of the tokenizer file>", e.g.
  // "hf-bpe:sha256:1fe93b61...". Two tokenizers with the same identity tokenize identically
  // (up to BOS handling, which the stream records separately).
  const std::string& identity() const { return identity_; }
  // The file the tokenizer was read from.
  const std::string& source() const { return source_; }

 protected:
  // Tokenizes valid UTF-8 text; special-token splitting is the implementation's job.
  virtual std::vector<int32_t> encode_valid(std::string_view text, bool parse_special) const = 0;

  int32_t vocab_size_ = 0, bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = false, add_eos_ = false;
  std::string kind_, identity_, source_;
};

}  // namespace sae
