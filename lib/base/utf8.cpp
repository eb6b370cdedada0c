// UTF-8 validation and lossy repair (see utf8.h).
#include "base/utf8.h"

#include <cstdio>

namespace sae {

namespace {
std::string utf8_error_message(size_t offset, unsigned char byte) {
  char buf[96];
  snprintf(buf, sizeof buf, "invalid UTF-8 at byte offset %zu (byte 0x%02X)", offset, byte);
  return buf;
}
}  // namespace

Utf8Error::Utf8Error(size_t off, unsigned char byte)
    : InputError(utf8_error_message(off, byte)), offset(off) {}

// Unicode table 3-7: the first byte decides the length and the range allowed for the second byte;
// the remaining bytes are 80..BF. Returns how many bytes form a well-formed prefix when the
// sequence is cut short or broken (the "maximal subpart" U+FFFD replacement needs that), through
// `valid_prefix`.
static size_t check_sequence(const unsigned char* p, size_t avail, size_t* valid_prefix) {
  unsigned char b0 = p[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlong 4-byte forms
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *valid_prefix = 0;  // 80..C1, F5..FF never start a sequence
    return 0;
  }
  size_t k = 1;
  for (; k < need && k < avail; ++k) {
    unsigned char b = p[k];
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
  }
  if (k == need) return need;
  *valid_prefix = k;  // k bytes (>= 1) form the maximal ill-formed subpart
  return 0;
}

size_t utf8_sequence_length(std::string_view s, size_t i) {
  size_t prefix = 0;
  return check_sequence(reinterpret_cast<const unsigned char*>(s.data()) + i, s.size() - i,
                        &prefix);
}

size_t utf8_find_invalid(std::string_view s) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    // ASCII fast path: eight bytes at a time while none has the high bit set.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    size_t prefix = 0;
    size_t len = check_sequence(p + i, n - i, &prefix);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

void utf8_check(std::string_view s) {
  size_t at = utf8_find_invalid(s);
  if (at != std::string_view::npos) throw Utf8Error(at, static_cast<unsigned char>(s[at]));
}

std::string utf8_replace_invalid(std::string_view s) {
  size_t first = utf8_find_invalid(s);
  if (first == std::string_view::npos) return std::string(s);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  std::string out(s.substr(0, first));
  size_t i = first, n = s.size();
  while (i < n) {
    size_t prefix = 0;
    size_t len = check_sequence(p + i, n - i, &prefix);
    if (len > 0) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal subpart (at least one byte)
      i += prefix > 0 ? prefix : 1;
    }
  }
  return out;
}

uint32_t utf8_next(std::string_view s, size_t& i) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data()) + i;
  uint32_t c = p[0];
  if (c < 0x80) {
    i += 1;
    return c;
  }
  if (c < 0xE0) {
    i += 2;
    return ((c & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (c < 0xF0) {
    i += 3;
    return ((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  i += 4;
  return ((c & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool unicode_is_whitespace(uint32_t c) {
  // PropList.txt, White_Space (unchanged since Unicode 6.3).
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

}  // namespace sae
