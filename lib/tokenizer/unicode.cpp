// Unicode normalization and lower-casing for tokenizer.json normalizers, through ICU.
#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/unistr.h>

#include "base/utf8.h"
#include "tokenizer/internal.h"

namespace sae::tok {

static bool all_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

std::string unicode_normalize(std::string_view s, NormForm form) {
  if (all_ascii(s)) return std::string(s);  // ASCII is invariant under all four forms
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormForm::NFC: n = icu::Normalizer2::getNFCInstance(err); break;
    case NormForm::NFD: n = icu::Normalizer2::getNFDInstance(err); break;
    case NormForm::NFKC: n = icu::Normalizer2::getNFKCInstance(err); break;
    case NormForm::NFKD: n = icu::Normalizer2::getNFKDInstance(err); break;
  }
  if (U_FAILURE(err)) throw std::runtime_error(std::string("ICU normalizer: ") + u_errorName(err));
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  icu::StringByteSink<std::string> sink(&out);
  n->normalizeUTF8(0, icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), sink, nullptr,
                   err);
  if (U_FAILURE(err)) throw std::runtime_error(std::string("ICU normalize: ") + u_errorName(err));
  return out;
}

std::string unicode_lowercase(std::string_view s) {
  if (all_ascii(s)) {
    std::string out(s);
    for (char& c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
  }
  // HF lower-cases character by character (Rust's char::to_lowercase): the full,
  // language-independent mappings, but no context, so no final-sigma rule. ICU on one code point
  // at a time gives exactly that.
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      ++i;
      continue;
    }
    size_t start = i;
    uint32_t cp = utf8_next(s, i);
    icu::UnicodeString u(static_cast<UChar32>(cp));
    u.toLower(icu::Locale::getRoot());
    std::string lower;
    u.toUTF8String(lower);
    if (lower.empty()) lower.assign(s.substr(start, i - start));
    out += lower;
  }
  return out;
}

}  // namespace sae::tok
