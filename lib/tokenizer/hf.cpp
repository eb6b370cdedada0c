// Hugging Face tokenizer.json: the pipeline of HF's `tokenizers` library for BPE models.
//
//   text -> split on added tokens that match the raw text (normalized: false)
//        -> normalizer on each remaining piece -> split on added tokens that match normalized text
//        -> pre-tokenizer (regex splits, Metaspace, ByteLevel...) -> BPE on each word
//
// Each step follows the corresponding file of huggingface/tokenizers; components not listed in
// docs/tokenizers.md are refused at load time with a message naming them, never approximated.
// The pipeline's stages are in hf_normalizers.cpp, hf_pre_tokenizers.cpp and hf_decoders.cpp.
#include <algorithm>
#include <climits>

#include "base/errors.h"
#include "base/files.h"
#include "base/utf8.h"
#include "tokenizer/hf_pipeline.h"
#include "tokenizer/internal.h"

namespace sae::tok {

namespace {

class HfTokenizer : public TokenizerBase {
 public:
  HfTokenizer(const json& j, const std::string& where);

  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string token_text(int32_t id) const override;
  int32_t token_id(const std::string& token) const override {
    auto a = added_ids_.find(token);
    if (a != added_ids_.end()) return a->second;
    auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
  }
  FileSpecials file_specials() const override { return specials_; }
  void set_cache(bool on) override { cache_.set_enabled(on); }

 protected:
  std::vector<int32_t> encode_valid(std::string_view text, bool parse_special) const override;

 private:
  void parse_model(const json& m, const std::string& where);
  void parse_post_processor(const json& p, const std::string& where);
  void encode_piece(std::string_view text, bool at_start, bool parse_special,
                    std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>& syms) const;
  const std::string& check_id(int32_t id) const;

  // Model.
  std::unordered_map<std::string, int32_t> vocab_;  // as in the file ("Ġthe")
  std::vector<std::string> id_to_token_;            // as in the file; added tokens' content
  std::vector<char> has_token_;
  BpeMerges merges_;
  bool byte_level_ = false, ignore_merges_ = false, byte_fallback_ = false, fuse_unk_ = false;
  int32_t unk_id_ = -1;
  int32_t byte_id_[256];           // byte-level: id of each byte's character
  int32_t byte_fallback_id_[256];  // "<0xNN>" ids when byte_fallback
  std::unordered_map<std::string, int32_t> byte_vocab_;  // byte-level, ignore_merges: raw bytes -> id
  mutable WordCache cache_;

  // Pipeline.
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  const Regex* fast_regex_ = nullptr;  // see single_isolated_regex
  std::unique_ptr<Decoder> decoder_;
  bool fast_decode_ = false;
  std::vector<std::string> decode_bytes_;  // fast_decode_: the bytes of each id

  // Added tokens.
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::unordered_map<std::string, int32_t> added_ids_;
  std::vector<char> is_added_;
  FileSpecials specials_;
};

HfTokenizer::HfTokenizer(const json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(where + ": not a tokenizer.json object");
  if (!j.contains("model") || !j["model"].is_object())
    throw InputError(where + ": no \"model\" object");
  // Only what changes ids is checked here; truncation and padding are batch options that
  // sae-collect does itself.
  normalizer_ = parse_normalizer(j.value("normalizer", json()), where);
  pre_tokenizer_ = parse_pre_tokenizer(j.value("pre_tokenizer", json()), where, byte_level_);
  if (byte_level_) fast_regex_ = single_isolated_regex(pre_tokenizer_.get());
  parse_model(j["model"], where);

  // Added tokens: matched in the raw text (normalized: false) or in normalized text.
  std::vector<AddedToken> raw, normalized;
  int32_t max_id = static_cast<int32_t>(id_to_token_.size()) - 1;
  for (const auto& a : j.value("added_tokens", json::array())) {
    AddedToken t;
    if (!a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
        !a["content"].is_string())
      throw InputError(where + ": an added_tokens entry lacks an integer id or a content string");
    t.id = a["id"].get<int32_t>();
    if (t.id < 0) throw InputError(where + ": added token with negative id");
    t.content = a["content"].get<std::string>();
    t.special = get_bool(a, "special", false);
    t.lstrip = get_bool(a, "lstrip", false);
    t.rstrip = get_bool(a, "rstrip", false);
    t.single_word = get_bool(a, "single_word", false);
    t.normalized = get_bool(a, "normalized", !t.special);
    max_id = std::max(max_id, t.id);
    if (static_cast<size_t>(t.id) >= id_to_token_.size()) {
      id_to_token_.resize(t.id + 1);
      has_token_.resize(t.id + 1, 0);
    }
    id_to_token_[t.id] = t.content;
    has_token_[t.id] = 1;
    added_ids_[t.content] = t.id;
    if (t.normalized) {
      if (normalizer_) normalizer_->apply(t.content);
      normalized.push_back(t);
    } else {
      raw.push_back(t);
    }
  }
  is_added_.assign(id_to_token_.size(), 0);
  for (auto& [s, id] : added_ids_) is_added_[id] = 1;
  raw_matcher_ = AddedTokenMatcher(std::move(raw));
  normalized_matcher_ = AddedTokenMatcher(std::move(normalized));
  set_vocab_size(max_id + 1);

  const json& dec = j.value("decoder", json());
  decoder_ = parse_decoder(dec, where);
  fast_decode_ = byte_level_ && is_plain_byte_level(dec);
  if (fast_decode_) {
    const ByteLevelMap& m = ByteLevelMap::get();
    decode_bytes_.resize(id_to_token_.size());
    for (size_t id = 0; id < id_to_token_.size(); ++id) {
      if (!has_token_[id]) continue;
      // As HF's ByteLevel decoder: every token, added ones included, is read as byte-level
      // characters when it can be ("<|endoftext|>" maps to itself), else taken as it is.
      if (!m.to_bytes(id_to_token_[id], decode_bytes_[id])) decode_bytes_[id] = id_to_token_[id];
    }
  }
  parse_post_processor(j.value("post_processor", json()), where);
}

void HfTokenizer::parse_model(const json& m, const std::string& where) {
  std::string type = get_string(m, "type", where, "BPE");
  if (type != "BPE") unsupported(where, "model \"" + type + "\"");
  std::string w = where + " model";
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0)
    unsupported(w, "BPE dropout (random tokenization)");
  if (!get_string(m, "continuing_subword_prefix", w).empty() ||
      !get_string(m, "end_of_word_suffix", w).empty())
    unsupported(w, "continuing_subword_prefix / end_of_word_suffix");
  if (!m.contains("vocab") || !m["vocab"].is_object()) throw InputError(w + ": no \"vocab\" object");
  int32_t max_id = -1;
  vocab_.reserve(m["vocab"].size() * 2);
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX / 2)
      throw InputError(w + ": vocab entry " + json(it.key()).dump() + " has no valid id");
    int32_t id = it.value().get<int32_t>();
    vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(max_id + 1, std::string());
  has_token_.assign(max_id + 1, 0);
  for (auto& [s, id] : vocab_) {
    id_to_token_[id] = s;
    has_token_[id] = 1;
  }

  ignore_merges_ = get_bool(m, "ignore_merges", false);
  byte_fallback_ = get_bool(m, "byte_fallback", false);
  fuse_unk_ = get_bool(m, "fuse_unk", false);
  std::string unk = get_string(m, "unk_token", w);
  if (!unk.empty()) {
    auto it = vocab_.find(unk);
    if (it == vocab_.end()) throw InputError(w + ": unk_token " + json(unk).dump() + " is not in the vocab");
    unk_id_ = it->second;
  }

  const json& merges = m.value("merges", json::array());
  merges_.reserve(merges.size());
  std::string left, right;
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& e = merges[r];
    if (e.is_string()) {  // "a b"
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw InputError(w + ": merge " + std::to_string(r) + " " + json(s).dump() +
                         " is not two tokens separated by one space");
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // [a, b]
      left = e[0].get<std::string>();
      right = e[1].get<std::string>();
    } else {
      throw InputError(w + ": merge " + std::to_string(r) + " is neither \"a b\" nor [a, b]");
    }
    auto l = vocab_.find(left), rr = vocab_.find(right), mm = vocab_.find(left + right);
    if (l == vocab_.end() || rr == vocab_.end() || mm == vocab_.end())
      throw InputError(w + ": merge " + std::to_string(r) + " (" + json(left).dump() + ", " +
                       json(right).dump() + ") uses a token that is not in the vocab");
    merges_.add(l->second, rr->second, static_cast<int32_t>(r), mm->second);
  }

  // Initial symbols: byte-level words are raw bytes, each byte's character looked up once here.
  const ByteLevelMap& bm = ByteLevelMap::get();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    utf8_append(ch, bm.byte_to_cp[b]);
    auto it = vocab_.find(ch);
    byte_id_[b] = it == vocab_.end() ? -1 : it->second;
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    auto f = vocab_.find(name);
    byte_fallback_id_[b] = f == vocab_.end() ? -1 : f->second;
  }
  if (byte_level_ && ignore_merges_) {
    std::string raw;
    for (auto& [s, id] : vocab_)
      if (bm.to_bytes(s, raw)) byte_vocab_.emplace(raw, id);
  }
}

void HfTokenizer::parse_post_processor(const json& p, const std::string& where) {
  if (p.is_null()) return;
  std::string type = get_string(p, "type", where);
  std::string w = where + " post_processor " + type;
  auto id_of = [&](const std::string& tok) {
    int32_t id = token_id(tok);
    if (id < 0) throw InputError(w + ": token " + json(tok).dump() + " is not in the vocabulary");
    return id;
  };
  if (type == "ByteLevel") return;  // offsets only
  if (type == "TemplateProcessing") {
    specials_.has_template = true;
    const json& single = p.value("single", json::array());
    const json& toks = p.value("special_tokens", json::object());
    bool seen_sequence = false;
    for (const auto& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken")) unsupported(w, "template item " + item.dump());
      std::string name = get_string(item["SpecialToken"], "id", w);
      std::vector<int32_t> ids;
      if (toks.contains(name) && toks[name].contains("ids"))
        for (const auto& i : toks[name]["ids"]) ids.push_back(i.get<int32_t>());
      else
        ids.push_back(id_of(name));
      auto& dst = seen_sequence ? specials_.suffix : specials_.prefix;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    specials_.has_template = true;
    auto pair_id = [&](const char* key) {
      const json& v = p.value(key, json());
      if (v.is_array() && v.size() == 2 && v[1].is_number_integer()) return v[1].get<int32_t>();
      throw InputError(w + ": \"" + key + "\" is not [token, id]");
    };
    specials_.prefix = {pair_id("cls")};
    specials_.suffix = {pair_id("sep")};
    return;
  }
  if (type == "Sequence") {
    for (const auto& s : p.value("processors", json::array())) parse_post_processor(s, where);
    return;
  }
  unsupported(where, "post_processor \"" + type + "\"");
}

std::vector<int32_t> HfTokenizer::encode_valid(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  for (const auto& seg : raw_matcher_.split(text, parse_special)) {
    if (seg.id >= 0)
      out.push_back(seg.id);
    else
      encode_piece(text.substr(seg.begin, seg.end - seg.begin), seg.begin == 0, parse_special, out);
  }
  return out;
}

void HfTokenizer::encode_piece(std::string_view text, bool at_start, bool parse_special,
                               std::vector<int32_t>& out) const {
  std::string normalized;
  if (normalizer_) {
    normalized.assign(text);
    normalizer_->apply(normalized);
    text = normalized;
  }
  for (const auto& seg : normalized_matcher_.split(text, parse_special)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    std::string_view part = text.substr(seg.begin, seg.end - seg.begin);
    if (fast_regex_) {
      size_t prev = 0;
      fast_regex_->for_each_match(part, [&](size_t b, size_t e) {
        if (b > prev) encode_word(part.substr(prev, b - prev), out);  // a gap: its own piece
        encode_word(part.substr(b, e - b), out);
        prev = e;
      });
      if (prev < part.size()) encode_word(part.substr(prev), out);
      continue;
    }
    std::vector<Piece> pieces{Piece{std::string(part), at_start && seg.begin == 0}};
    if (pre_tokenizer_) pre_tokenizer_->apply(pieces);
    for (const auto& p : pieces) encode_word(p.text, out);
  }
}

void HfTokenizer::initial_symbols(std::string_view word, std::vector<int32_t>& syms) const {
  // HF's BPE::merge_word: one symbol per character (per byte for byte-level); a character
  // missing from the vocab becomes its <0xNN> byte tokens (byte_fallback), else unk (runs of
  // unknowns fused into one when fuse_unk), else it is dropped.
  bool pending_unk = false;
  auto flush_unk = [&] {
    if (pending_unk) syms.push_back(unk_id_);
    pending_unk = false;
  };
  auto unknown = [&] {
    if (unk_id_ < 0) return;
    if (pending_unk && !fuse_unk_) syms.push_back(unk_id_);
    pending_unk = true;
  };
  if (byte_level_) {
    for (unsigned char b : word) {
      if (byte_id_[b] >= 0) {
        flush_unk();
        syms.push_back(byte_id_[b]);
      } else if (byte_fallback_ && byte_fallback_id_[b] >= 0) {
        flush_unk();
        syms.push_back(byte_fallback_id_[b]);
      } else {
        unknown();
      }
    }
    flush_unk();
    return;
  }
  std::string ch;
  for (size_t i = 0; i < word.size();) {
    size_t len = utf8_sequence_length(word, i);
    if (len == 0) len = 1;  // cannot happen: text was validated
    ch.assign(word.substr(i, len));
    i += len;
    auto it = vocab_.find(ch);
    if (it != vocab_.end()) {
      flush_unk();
      syms.push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : ch) all = all && byte_fallback_id_[b] >= 0;
      if (all) {
        flush_unk();
        for (unsigned char b : ch) syms.push_back(byte_fallback_id_[b]);
        continue;
      }
    }
    unknown();
  }
  flush_unk();
}

void HfTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  constexpr size_t kMaxCached = 256;  // longer words are rare; caching them only churns the cache
  bool cacheable = word.size() < kMaxCached;
  if (cacheable && cache_.get(word, out)) return;
  if (ignore_merges_) {  // Llama 3: a word that is itself a token is taken whole
    const auto& table = byte_level_ ? byte_vocab_ : vocab_;
    auto it = table.find(std::string(word));
    if (it != table.end()) {
      out.push_back(it->second);
      return;
    }
  }
  thread_local std::vector<int32_t> syms;
  syms.clear();
  initial_symbols(word, syms);
  merges_.merge(syms);
  out.insert(out.end(), syms.begin(), syms.end());
  if (cacheable) cache_.put(word, syms);
}

const std::string& HfTokenizer::check_id(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_token_[id])
    throw InputError("token id " + std::to_string(id) + " is not in the vocabulary (size " +
                     std::to_string(vocab_size()) + ")");
  return id_to_token_[id];
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids) const {
  if (fast_decode_) {
    std::string out;
    for (int32_t id : ids) {
      check_id(id);
      out += decode_bytes_[id];
    }
    return out;
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) tokens.push_back(check_id(id));
  if (!decoder_) {  // HF joins the raw tokens with spaces when there is no decoder
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  decoder_->apply(tokens);
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

// Bytes that are not part of a whole UTF-8 character become "<0xNN>".
std::string readable(std::string_view bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    size_t len = utf8_sequence_length(bytes, i);
    if (len) {
      out.append(bytes.substr(i, len));
      i += len;
    } else {
      char buf[8];
      snprintf(buf, sizeof buf, "<0x%02X>", static_cast<unsigned char>(bytes[i]));
      out += buf;
      ++i;
    }
  }
  return out;
}

std::string HfTokenizer::token_text(int32_t id) const {
  const std::string& t = check_id(id);
  if (is_added_[id]) return t;
  if (byte_level_) {
    std::string bytes;
    return readable(ByteLevelMap::get().to_bytes(t, bytes) ? bytes : t);
  }
  int b = byte_token(t);
  if (b >= 0) return readable(std::string(1, static_cast<char>(b)));
  return replace_all(t, kSpaceMarker, " ");
}

}  // namespace

std::unique_ptr<TokenizerBase> make_hf_tokenizer_from_json(const json& j, const std::string& where) {
  return std::make_unique<HfTokenizer>(j, where);
}

std::unique_ptr<TokenizerBase> make_hf_tokenizer(const std::string& path) {
  const std::string bytes = read_file(path);
  const json j = parse_json(bytes, path);
  auto t = make_hf_tokenizer_from_json(j, path);
  t->set_identity("hf-bpe", path, bytes);
  return t;
}

std::unique_ptr<TokenizerBase> make_gpt2_files_tokenizer(const std::string& vocab_path,
                                                         const std::string& merges_path,
                                                         const json& cfg) {
  // The tokenizer.json that HF's GPT2TokenizerFast builds from these two files.
  json vocab = read_json_file(vocab_path);
  if (!vocab.is_object()) throw InputError(vocab_path + ": not a JSON object of token ids");
  std::string merges_text = read_file(merges_path);
  json merges = json::array();
  size_t pos = 0, line_no = 0;
  while (pos < merges_text.size()) {
    size_t nl = merges_text.find('\n', pos);
    std::string line = merges_text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? merges_text.size() : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    merges.push_back(line);
  }
  json added = json::array();
  std::vector<std::string> seen;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    std::string tok = config_token(cfg, key);
    if (tok.empty() || std::find(seen.begin(), seen.end(), tok) != seen.end()) continue;
    if (!vocab.contains(tok)) continue;
    seen.push_back(tok);
    added.push_back({{"id", vocab[tok]}, {"content", tok}, {"special", true}, {"normalized", false}});
  }
  if (seen.empty() && vocab.contains("<|endoftext|>"))
    added.push_back({{"id", vocab["<|endoftext|>"]}, {"content", "<|endoftext|>"},
                     {"special", true}, {"normalized", false}});
  json j = {{"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer",
             {{"type", "ByteLevel"},
              {"add_prefix_space", cfg.is_object() && cfg.value("add_prefix_space", false)},
              {"use_regex", true}}},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  auto t = make_hf_tokenizer_from_json(j, vocab_path);
  t->set_identity("gpt2-bpe", vocab_path, read_file(vocab_path) + read_file(merges_path));
  return t;
}

}  // namespace sae::tok
