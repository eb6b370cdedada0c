// Tokenizer::load: finds the tokenizer files of a Hugging Face model directory and decides the
// BOS/EOS facts from tokenizer_config.json, special_tokens_map.json, the tokenizer file and
// config.json (docs/tokenizers.md).
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "base/files.h"
#include "base/sha256.h"
#include "tokenizer/internal.h"

namespace sae {

namespace tok {

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t last = 0;
  for (size_t pos = s.find(from); pos != std::string_view::npos; pos = s.find(from, last)) {
    out.append(s, last, pos - last);
    out.append(to);
    last = pos + from.size();
  }
  out.append(s, last, std::string_view::npos);
  return out;
}

void TokenizerBase::set_identity(const std::string& kind, const std::string& source,
                                 std::string_view bytes) {
  kind_ = kind;
  source_ = source;
  identity_ = kind + ":sha256:" + sha256_hex(bytes);
}

}  // namespace tok

namespace {

bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The name of a special token ("bos_token"): tokenizer_config.json, else special_tokens_map.json.
std::string special_name(const tok::json& cfg, const tok::json& map, const char* key) {
  if (cfg.is_object() && cfg.contains(key)) return tok::config_token(cfg, key);
  return tok::config_token(map, key);
}

void apply_specials(tok::TokenizerBase& t, const std::string& dir, const tok::json& cfg,
                    const tok::json& map, const tok::json& model_cfg) {
  const std::string cfg_path = dir + "/tokenizer_config.json";
  tok::FileSpecials fs = t.file_specials();
  if (fs.prefix.size() > 1 || fs.suffix.size() > 1)
    throw InputError(t.source() + ": post_processor adds more than one token before or after "
                                  "the text, which is not supported");
  auto resolve = [&](const char* key, const char* id_key, const std::vector<int32_t>& tmpl,
                     int32_t dflt) -> int32_t {
    std::string name = special_name(cfg, map, key);
    if (!name.empty()) {
      int32_t id = t.token_id(name);
      if (id < 0)
        throw InputError(cfg_path + ": " + key + " " + tok::json(name).dump() +
                         " is not in the vocabulary of " + t.source());
      return id;
    }
    if (!tmpl.empty()) return tmpl[0];
    if (model_cfg.is_object() && model_cfg.contains(id_key) && model_cfg[id_key].is_number_integer())
      return model_cfg[id_key].get<int32_t>();
    return dflt;
  };
  int32_t bos = resolve("bos_token", "bos_token_id", fs.prefix, fs.default_bos);
  int32_t eos = resolve("eos_token", "eos_token_id", fs.suffix, fs.default_eos);

  bool add_bos, add_eos;
  if (cfg.is_object() && cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
    add_bos = cfg["add_bos_token"].get<bool>();
  } else if (fs.has_template) {
    add_bos = !fs.prefix.empty();
    if (add_bos) bos = fs.prefix[0];  // what the template adds is what HF adds
  } else {
    add_bos = fs.default_add_bos;
  }
  if (cfg.is_object() && cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) {
    add_eos = cfg["add_eos_token"].get<bool>();
  } else if (fs.has_template) {
    add_eos = !fs.suffix.empty();
    if (add_eos) eos = fs.suffix[0];
  } else {
    add_eos = false;
  }
  if (bos >= t.vocab_size() || eos >= t.vocab_size())
    throw InputError(dir + "/config.json: bos/eos token id beyond the vocabulary of " + t.source());
  if (add_bos && bos < 0) throw InputError(cfg_path + ": add_bos_token is true but no BOS token is named");
  if (add_eos && eos < 0) throw InputError(cfg_path + ": add_eos_token is true but no EOS token is named");
  t.set_specials(bos, eos, add_bos, add_eos);
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& model_dir) {
  struct stat st;
  if (stat(model_dir.c_str(), &st) != 0)
    throw InputError(model_dir + ": cannot open (" + std::strerror(errno) + ")");
  if (!S_ISDIR(st.st_mode)) throw InputError(model_dir + ": not a directory");
  const std::string d = model_dir;
  auto optional_json = [&](const std::string& name) {
    std::string p = d + "/" + name;
    return is_file(p) ? read_json_file(p) : tok::json::object();
  };
  tok::json cfg = optional_json("tokenizer_config.json");
  tok::json map = optional_json("special_tokens_map.json");
  tok::json model_cfg = optional_json("config.json");
  if (!cfg.is_object()) throw InputError(d + "/tokenizer_config.json: not a JSON object");

  std::unique_ptr<tok::TokenizerBase> t;
  if (is_file(d + "/tokenizer.json"))
    t = tok::make_hf_tokenizer(d + "/tokenizer.json");
  else if (is_file(d + "/tokenizer.model"))
    t = tok::make_sentencepiece_tokenizer(d + "/tokenizer.model", cfg);
  else if (is_file(d + "/vocab.json") && is_file(d + "/merges.txt"))
    t = tok::make_gpt2_files_tokenizer(d + "/vocab.json", d + "/merges.txt", cfg);
  else
    throw InputError(d + ": no tokenizer found (tokenizer.json, tokenizer.model, or vocab.json "
                         "with merges.txt)");
  apply_specials(*t, d, cfg, map, model_cfg);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  utf8_check(text);
  return encode_valid(text, parse_special);
}

std::vector<int32_t> Tokenizer::encode_with_special(std::string_view text) const {
  std::vector<int32_t> ids;
  if (add_bos_) ids.push_back(bos_id_);
  std::vector<int32_t> body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (add_eos_) ids.push_back(eos_id_);
  return ids;
}

}  // namespace sae
