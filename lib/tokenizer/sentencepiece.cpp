// tokenizer.model through libsentencepiece, wrapped the way HF's slow LlamaTokenizer wraps it:
// special tokens written in the text are split out first, the text between them goes to
// sentencepiece; "legacy": false in tokenizer_config.json selects HF's non-legacy handling of the
// text that follows a special token (docs/tokenizers.md).
#include "base/files.h"
#include "tokenizer/internal.h"

#ifdef SAE_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>

#include <map>
#endif

namespace sae::tok {

#ifndef SAE_HAVE_SENTENCEPIECE

std::unique_ptr<TokenizerBase> make_sentencepiece_tokenizer(const std::string& path, const json&) {
  throw InputError(path + ": saetools was built without libsentencepiece, so tokenizer.model "
                          "files cannot be read (install libsentencepiece-dev and rebuild)");
}

#else

namespace {

const char* const kSpace = kSpaceMarker;

class SpTokenizer : public TokenizerBase {
 public:
  SpTokenizer(const std::string& path, const json& cfg);

  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string token_text(int32_t id) const override;
  int32_t token_id(const std::string& token) const override {
    for (auto& [id, t] : extra_)
      if (t == token) return id;
    int id = sp_.PieceToId(token);
    if (id < 0 || (sp_.IsUnknown(id) && sp_.IdToPiece(id) != token)) return -1;
    return id;
  }
  FileSpecials file_specials() const override {
    FileSpecials f;
    f.default_bos = sp_.bos_id();
    f.default_eos = sp_.eos_id();
    f.default_add_bos = true;  // HF's LlamaTokenizer: add_bos_token defaults to true
    return f;
  }

 protected:
  std::vector<int32_t> encode_valid(std::string_view text, bool parse_special) const override;

 private:
  void sp_encode(const sentencepiece::SentencePieceProcessor& sp, std::string_view s,
                 std::vector<int32_t>& out) const;
  const std::string& piece(int32_t id) const;

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  // Non-legacy mode: the same model without the dummy prefix, and the length of the "<unk>"
  // prefix HF encodes in front of text that starts with a space.
  sentencepiece::SentencePieceProcessor sp_no_prefix_;
  bool legacy_ = true, add_prefix_space_ = true;
  std::string unk_text_;
  size_t unk_len_ = 0;
  int32_t space_id_ = -1;
  AddedTokenMatcher matcher_;
  std::vector<char> is_special_;
  std::map<int32_t, std::string> extra_;  // added tokens beyond the sentencepiece vocabulary
};

SpTokenizer::SpTokenizer(const std::string& path, const json& cfg) : path_(path) {
  std::string bytes = read_file(path);
  auto st = sp_.LoadFromSerializedProto(bytes);
  if (!st.ok()) throw InputError(path + ": not a sentencepiece model (" + st.ToString() + ")");
  set_identity("sentencepiece", path, bytes);
  int32_t n = sp_.GetPieceSize();

  // Special tokens HF's tokenizer splits out of the text: added_tokens_decoder, the named
  // special tokens, and with no tokenizer_config.json the model's control and unknown pieces.
  std::map<int32_t, AddedToken> added;
  if (cfg.is_object() && cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object())
    for (auto it = cfg["added_tokens_decoder"].begin(); it != cfg["added_tokens_decoder"].end(); ++it) {
      const json& a = it.value();
      AddedToken t;
      try {
        t.id = std::stoi(it.key());
      } catch (const std::exception&) {
        throw InputError("tokenizer_config.json: added_tokens_decoder key " + json(it.key()).dump() +
                         " is not an id");
      }
      t.content = a.value("content", "");
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.single_word = a.value("single_word", false);
      if (t.id >= n) extra_[t.id] = t.content;
      added[t.id] = t;
    }
  std::vector<std::string> names;
  if (cfg.is_object() && !cfg.empty()) {
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"})
      names.push_back(config_token(cfg, key));
    for (const auto& s : cfg.value("additional_special_tokens", json::array()))
      if (s.is_string()) names.push_back(s.get<std::string>());
  } else {
    for (int32_t id = 0; id < n; ++id)
      if (sp_.IsControl(id) || sp_.IsUnknown(id)) names.push_back(sp_.IdToPiece(id));
  }
  for (const auto& name : names) {
    if (name.empty()) continue;
    int32_t id = token_id(name);
    if (id < 0 || added.count(id)) continue;
    AddedToken t;
    t.id = id;
    t.content = name;
    t.special = true;
    added[id] = t;
  }
  int32_t max_id = n - 1;
  std::vector<AddedToken> list;
  for (auto& [id, t] : added) {
    max_id = std::max(max_id, id);
    list.push_back(t);
  }
  set_vocab_size(max_id + 1);
  is_special_.assign(max_id + 1, 0);
  for (auto& t : list) is_special_[t.id] = 1;
  for (int32_t id = 0; id < n; ++id)
    if (sp_.IsControl(id)) is_special_[id] = 1;
  matcher_ = AddedTokenMatcher(std::move(list));
  space_id_ = token_id(kSpace);

  if (cfg.is_object()) {
    if (cfg.contains("legacy") && cfg["legacy"].is_boolean()) legacy_ = cfg["legacy"].get<bool>();
    if (cfg.contains("add_prefix_space") && cfg["add_prefix_space"].is_boolean())
      add_prefix_space_ = cfg["add_prefix_space"].get<bool>();
  }
  if (!legacy_) {
    // As HF's get_spm_processor: the model proto with normalizer_spec.add_dummy_prefix = false
    // merged in. Appending field 3 (normalizer_spec) holding field 3 (add_dummy_prefix) = 0 to
    // the serialized proto is that merge: protobuf merges repeated embedded messages.
    auto st2 = sp_no_prefix_.LoadFromSerializedProto(bytes + std::string("\x1A\x02\x18\x00", 4));
    if (!st2.ok()) throw InputError(path + ": cannot turn off the dummy prefix (" + st2.ToString() + ")");
    unk_text_ = config_token(cfg, "unk_token");
    if (unk_text_.empty() && sp_.unk_id() >= 0) unk_text_ = sp_.IdToPiece(sp_.unk_id());
    std::vector<int> ids;
    sp_no_prefix_.Encode(unk_text_, &ids);
    unk_len_ = ids.size();
  }
}

void SpTokenizer::sp_encode(const sentencepiece::SentencePieceProcessor& sp, std::string_view s,
                            std::vector<int32_t>& out) const {
  std::vector<int> ids;
  auto st = sp.Encode(s, &ids);
  if (!st.ok()) throw std::runtime_error(path_ + ": sentencepiece encode failed: " + st.ToString());
  out.insert(out.end(), ids.begin(), ids.end());
}

std::vector<int32_t> SpTokenizer::encode_valid(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  if (legacy_) {
    // HF legacy (the default when tokenizer_config.json does not say "legacy": false): every
    // stretch of text between special tokens is encoded on its own, dummy prefix included.
    for (const auto& seg : matcher_.split(text, parse_special)) {
      if (seg.id >= 0)
        out.push_back(seg.id);
      else
        sp_encode(sp_, text.substr(seg.begin, seg.end - seg.begin), out);
    }
    return out;
  }
  // HF non-legacy (LlamaTokenizer.tokenize/_tokenize): literal U+2581 read as spaces, one prefix
  // space for the whole text, no dummy prefix after special tokens.
  if (text.empty()) return out;
  std::string t = (add_prefix_space_ ? kSpace : "") + replace_all(text, kSpace, " ");
  bool first_is_lone_space = false, second_is_special = false;
  auto segs = matcher_.split(t, parse_special);
  for (size_t k = 0; k < segs.size(); ++k) {
    const auto& seg = segs[k];
    if (seg.id >= 0) {
      if (k == 1) second_is_special = true;
      out.push_back(seg.id);
      continue;
    }
    std::string_view s = std::string_view(t).substr(seg.begin, seg.end - seg.begin);
    size_t before = out.size();
    if (s.compare(0, 3, kSpace) == 0 || s[0] == ' ') {
      std::vector<int32_t> ids;
      sp_encode(sp_no_prefix_, unk_text_ + std::string(s), ids);
      if (ids.size() >= unk_len_) ids.erase(ids.begin(), ids.begin() + unk_len_);
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      sp_encode(sp_no_prefix_, s, out);
    }
    if (k == 0 && out.size() - before == 1 && out[before] == space_id_) first_is_lone_space = true;
  }
  // HF drops the prefix space it added when a special token follows it directly.
  if (first_is_lone_space && second_is_special && out.size() > 1) out.erase(out.begin());
  return out;
}

const std::string& SpTokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw InputError("token id " + std::to_string(id) + " is not in the vocabulary (size " +
                     std::to_string(vocab_size()) + ")");
  auto e = extra_.find(id);
  if (e != extra_.end()) return e->second;
  if (id >= sp_.GetPieceSize())
    throw InputError("token id " + std::to_string(id) + " has no token");
  return sp_.IdToPiece(id);
}

// Exact bytes: pieces with U+2581 read as spaces, byte pieces as their byte, special tokens as
// their text; the space the dummy prefix put in front of the first piece is removed, as HF's
// LlamaTokenizer.convert_tokens_to_string does.
std::string SpTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (size_t k = 0; k < ids.size(); ++k) {
    int32_t id = ids[k];
    const std::string& p = piece(id);
    if (id < sp_.GetPieceSize() && sp_.IsByte(id)) {
      out += static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16));  // "<0x0A>"
      continue;
    }
    if (is_special_[id]) {
      out += p;
      continue;
    }
    std::string_view v = p;
    if (k == 0 && add_prefix_space_ && v.compare(0, 3, kSpace) == 0) v.remove_prefix(3);
    out += replace_all(v, kSpace, " ");
  }
  return out;
}

std::string SpTokenizer::token_text(int32_t id) const {
  const std::string& p = piece(id);
  if (id < sp_.GetPieceSize() && sp_.IsByte(id)) {
    int b = std::stoi(p.substr(3, 2), nullptr, 16);
    if (b < 0x80) return std::string(1, static_cast<char>(b));
    return p;  // a lone byte of a multi-byte character: shown as "<0xE6>"
  }
  if (is_special_[id]) return p;
  return replace_all(p, kSpace, " ");
}

}  // namespace

std::unique_ptr<TokenizerBase> make_sentencepiece_tokenizer(const std::string& path,
                                                            const json& cfg) {
  return std::make_unique<SpTokenizer>(path, cfg);
}

#endif

}  // namespace sae::tok
