// Fast JSON text for sae-explain's big outputs (latents.jsonl, the dashboard's data files): numbers
// through std::to_chars, strings escaped in one pass, no allocation per value. A dashboard of
// 16,384 latents is hundreds of MB of numbers; a JSON DOM per value would cost ten times more.
#pragma once
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace sae {

// Which bytes JsonText::string() must escape: '"', '\\' and the control characters always; with html_safe
// also '<', '>', '&', DEL, and 0xE2 (the first byte of U+2028/U+2029, checked in full there).
struct JsonEscapeTables {
  bool plain[256] = {}, html[256] = {};
  constexpr JsonEscapeTables() {
    for (int c = 0; c < 0x20; c++) plain[c] = html[c] = true;
    plain['"'] = html['"'] = true;
    plain['\\'] = html['\\'] = true;
    html['<'] = html['>'] = html['&'] = html[0x7f] = html[0xE2] = true;
  }
};
inline constexpr JsonEscapeTables kJsonEscape{};

struct JsonText {
  std::string s;

  void raw(std::string_view v) { s.append(v.data(), v.size()); }
  void ch(char c) { s.push_back(c); }
  void i64(int64_t v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    s.append(b, size_t(r.ptr - b));
  }
  // `digits` significant digits in the shortest form std::to_chars picks ("0.1235", "1.5e-07",
  // "2"); null when not finite.
  void real(double v, int digits) {
    if (!std::isfinite(v)) return raw("null");
    if (v == 0) return ch('0');
    char b[40];
    auto r = std::to_chars(b, b + sizeof b, v, std::chars_format::general, digits);
    s.append(b, size_t(r.ptr - b));
  }
  // A JSON string of valid UTF-8 `v`. html_safe: also '<', '>' and '&' as \u escapes, so the text
  // can sit inside a <script> element, and U+2028/U+2029 escaped for older JavaScript.
  void string(std::string_view v, bool html_safe) {
    const bool* special = html_safe ? kJsonEscape.html : kJsonEscape.plain;
    ch('"');
    size_t plain = 0;  // start of the run of bytes copied as they are
    for (size_t i = 0; i < v.size(); i++) {
      const unsigned char c = static_cast<unsigned char>(v[i]);
      if (!special[c]) continue;
      if (c == 0xE2) {  // (html_safe only) U+2028 and U+2029 are E2 80 A8 and E2 80 A9
        if (i + 2 < v.size() && static_cast<unsigned char>(v[i + 1]) == 0x80 &&
            (static_cast<unsigned char>(v[i + 2]) & 0xFE) == 0xA8) {
          s.append(v.data() + plain, i - plain);
          raw(static_cast<unsigned char>(v[i + 2]) == 0xA8 ? "\\u2028" : "\\u2029");
          i += 2;
          plain = i + 1;
        }
        continue;
      }
      s.append(v.data() + plain, i - plain);
      plain = i + 1;
      switch (c) {
        case '"': raw("\\\""); break;
        case '\\': raw("\\\\"); break;
        case '\n': raw("\\n"); break;
        case '\t': raw("\\t"); break;
        case '\r': raw("\\r"); break;
        default: {
          static const char hex[] = "0123456789abcdef";
          char b[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
          s.append(b, 6);
        }
      }
    }
    s.append(v.data() + plain, v.size() - plain);
    ch('"');
  }

};

}  // namespace sae
