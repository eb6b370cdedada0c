// tokenizer.json normalizers (tokenizer/hf_pipeline.h): NFC/NFKC/NFD/NFKD, Lowercase, Prepend,
// Replace, Strip and Sequence, as huggingface/tokenizers' normalizers apply them.
#include "tokenizer/hf_pipeline.h"

namespace sae::tok {

namespace {

struct UnicodeNorm : Normalizer {
  NormForm form;
  explicit UnicodeNorm(NormForm f) : form(f) {}
  void apply(std::string& s) const override { s = unicode_normalize(s, form); }
};

struct Lowercase : Normalizer {
  void apply(std::string& s) const override { s = unicode_lowercase(s); }
};

struct Prepend : Normalizer {
  std::string prefix;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix);
  }
};

struct Strip : Normalizer {
  bool left = true, right = true;
  void apply(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left)
      while (b < e) {
        size_t j = b;
        if (!unicode_is_whitespace(utf8_next(s, j))) break;
        b = j;
      }
    if (right)
      while (e > b) {
        size_t k = e - 1;
        while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t j = k;
        if (!unicode_is_whitespace(utf8_next(s, j))) break;
        e = k;
      }
    s = s.substr(b, e - b);
  }
};

struct NormSequence : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> steps;
  void apply(std::string& s) const override {
    for (auto& n : steps) n->apply(s);
  }
};
}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  std::string type = get_string(j, "type", where);
  std::string w = where + " normalizer " + type;
  if (type == "NFC") return std::make_unique<UnicodeNorm>(NormForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNorm>(NormForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNorm>(NormForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNorm>(NormForm::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") {
    auto n = std::make_unique<Prepend>();
    n->prefix = get_string(j, "prepend", w);
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<Replace>();
    n->pattern = std::make_unique<Pattern>(j.value("pattern", json()), w);
    n->content = get_string(j, "content", w);
    return n;
  }
  if (type == "Strip") {
    auto n = std::make_unique<Strip>();
    n->left = get_bool(j, "strip_left", true);
    n->right = get_bool(j, "strip_right", true);
    return n;
  }
  if (type == "Sequence") {
    auto n = std::make_unique<NormSequence>();
    for (const auto& s : j.value("normalizers", json::array()))
      if (auto step = parse_normalizer(s, where)) n->steps.push_back(std::move(step));
    return n;
  }
  unsupported(where, "normalizer \"" + type + "\"");
}

}  // namespace sae::tok
