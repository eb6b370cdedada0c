// Pre-tokenizer regexes through PCRE2 (UTF + UCP + JIT), and GPT-2's byte <-> character map.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "base/utf8.h"
#include "tokenizer/internal.h"

namespace sae::tok {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Oniguruma's \s for UTF-8 text: the Unicode White_Space set.
static const char* const kWhiteSpaceSet =
    R"(\t\n\x0B\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

std::string Regex::translate_oniguruma(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char d = p[i + 1];
      if (d == 's') {
        out += in_class ? std::string(kWhiteSpaceSet) : "[" + std::string(kWhiteSpaceSet) + "]";
      } else if (d == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpaceSet) + "]";
      } else {
        // Everything else, \S inside a class included (it differs only on U+180E), as written.
        out += c;
        out += d;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      // POSIX class like [:alpha:] inside a bracket expression: copy through its closing ":]".
      size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(p, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, const std::string& where) {
  std::string translated = translate_oniguruma(pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw InputError(where + ": regex " + json(pattern).dump() + " is not supported (" +
                     reinterpret_cast<const char*>(msg) + ")");
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is absent
  code_ = re;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

namespace {
// One match block per thread, reused across calls (matching allocates nothing then).
struct ThreadMatchData {
  pcre2_match_data* md = pcre2_match_data_create(16, nullptr);
  ~ThreadMatchData() { pcre2_match_data_free(md); }
};
pcre2_match_data* thread_match_data() {
  thread_local ThreadMatchData d;
  return d.md;
}
}  // namespace

void Regex::for_each_match(std::string_view s, const std::function<void(size_t, size_t)>& f) const {
  auto* re = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = thread_match_data();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t n = s.size(), start = 0;
  while (start <= n) {
    int rc = pcre2_match(re, subject, n, start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw std::runtime_error(std::string("regex match failed: ") +
                               reinterpret_cast<const char*>(msg));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    f(b, e);
    if (e > b) {
      start = e;
    } else {
      if (e >= n) break;
      size_t len = utf8_sequence_length(s, e);
      start = e + (len ? len : 1);
    }
  }
}

bool Regex::search(std::string_view s) const {
  auto* re = static_cast<pcre2_code*>(code_);
  int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                       PCRE2_NO_UTF_CHECK, thread_match_data(), nullptr);
  return rc >= 0;
}

ByteLevelMap::ByteLevelMap() {
  // Printable Latin-1 bytes stand for themselves; the other 68 bytes get U+0100 onwards, in
  // byte order (GPT-2's bytes_to_unicode).
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    byte_to_cp[b] = printable(b) ? static_cast<uint32_t>(b) : next++;
    cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
  }
}

const ByteLevelMap& ByteLevelMap::get() {
  static const ByteLevelMap m;
  return m;
}

bool ByteLevelMap::to_bytes(std::string_view token, std::string& out) const {
  out.clear();
  if (utf8_find_invalid(token) != std::string_view::npos) return false;
  size_t i = 0;
  while (i < token.size()) {
    auto it = cp_to_byte.find(utf8_next(token, i));
    if (it == cp_to_byte.end()) return false;
    out += static_cast<char>(it->second);
  }
  return true;
}

}  // namespace sae::tok
