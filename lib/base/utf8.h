// UTF-8 checks and small helpers shared by the tokenizers. "Valid" follows Unicode's table of
// well-formed byte sequences (Unicode 15, table 3-7): no overlong forms, no surrogates, nothing
// above U+10FFFF.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/errors.h"

namespace sae {

// Text that is not valid UTF-8. `offset` is the byte offset of the first byte of the first
// ill-formed sequence; the message says "invalid UTF-8 at byte offset N (byte 0xNN)".
struct Utf8Error : InputError {
  Utf8Error(size_t offset, unsigned char byte);
  size_t offset;
};

// Byte offset of the first ill-formed sequence, or std::string_view::npos when `s` is valid.
size_t utf8_find_invalid(std::string_view s);

// Throws Utf8Error when `s` is not valid UTF-8.
void utf8_check(std::string_view s);

// Replaces every maximal ill-formed subsequence with U+FFFD (Unicode's recommended practice, the
// same as Python's bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy).
// Valid text is returned unchanged.
std::string utf8_replace_invalid(std::string_view s);

// Length of the well-formed sequence starting at s[i] (1 to 4), or 0 when it is ill-formed.
size_t utf8_sequence_length(std::string_view s, size_t i);

// Decodes the code point at s[i] of VALID text and advances i past it.
uint32_t utf8_next(std::string_view s, size_t& i);

// Appends the UTF-8 encoding of code point `cp` (<= U+10FFFF, not a surrogate).
void utf8_append(std::string& out, uint32_t cp);

// Unicode White_Space property (what Rust's char::is_whitespace tests).
bool unicode_is_whitespace(uint32_t cp);

}  // namespace sae
