// UTF-8 validation and U+FFFD repair (lib/base/utf8.h), and the SHA-256 behind tokenizer identities.
// The replacement cases are Unicode's own examples of "maximal subparts" (Unicode 15, section
// 3.9, table 3-8), which Python's errors="replace" and Rust's from_utf8_lossy reproduce.
#include <gtest/gtest.h>

#include "base/sha256.h"
#include "base/utf8.h"
#include "tokenizer/internal.h"

using sae::utf8_find_invalid;
using sae::utf8_replace_invalid;

namespace {
const std::string R = "\xEF\xBF\xBD";  // U+FFFD
constexpr size_t npos = std::string_view::npos;
}  // namespace

TEST(TokenizerUtf8, ValidTextPasses) {
  EXPECT_EQ(utf8_find_invalid(""), npos);
  EXPECT_EQ(utf8_find_invalid("plain ascii, long enough for the 8-byte fast path"), npos);
  EXPECT_EQ(utf8_find_invalid("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80"), npos);
  EXPECT_EQ(utf8_find_invalid(std::string("nul \0 inside", 12)), npos);
  EXPECT_EQ(utf8_find_invalid("\xF4\x8F\xBF\xBF"), npos);  // U+10FFFF, the last code point
  EXPECT_EQ(utf8_find_invalid("\xED\x9F\xBF"), npos);      // U+D7FF, just below the surrogates
}

TEST(TokenizerUtf8, FindsTheFirstBadByte) {
  EXPECT_EQ(utf8_find_invalid("abc\x80"), 3u);                  // lone continuation byte
  EXPECT_EQ(utf8_find_invalid("\xC0\xAF"), 0u);                 // overlong '/'
  EXPECT_EQ(utf8_find_invalid("ok\xE0\x80\xAF"), 2u);           // overlong 3-byte form
  EXPECT_EQ(utf8_find_invalid("\xED\xA0\x80"), 0u);             // surrogate U+D800
  EXPECT_EQ(utf8_find_invalid("\xF4\x90\x80\x80"), 0u);         // above U+10FFFF
  EXPECT_EQ(utf8_find_invalid("\xF5\x80\x80\x80"), 0u);         // F5 never starts a sequence
  EXPECT_EQ(utf8_find_invalid("twelve bytes\xE6\x97"), 12u);    // cut short at the end
  EXPECT_EQ(utf8_find_invalid("0123456789abcdef\xFF"), 16u);    // after the fast path
}

TEST(TokenizerUtf8, ErrorMessageNamesOffsetAndByte) {
  try {
    sae::utf8_check("abc\xE9z");
    FAIL();
  } catch (const sae::Utf8Error& e) {
    EXPECT_EQ(e.offset, 3u);
    EXPECT_EQ(std::string(e.what()), "invalid UTF-8 at byte offset 3 (byte 0xE9)");
  }
  EXPECT_NO_THROW(sae::utf8_check("fine \xC3\xA9"));
}

TEST(TokenizerUtf8, ReplacementFollowsMaximalSubparts) {
  EXPECT_EQ(utf8_replace_invalid("valid \xC3\xA9"), "valid \xC3\xA9");
  EXPECT_EQ(utf8_replace_invalid("a\xFF" "b"), "a" + R + "b");
  // Table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a FFFD FFFD FFFD b FFFD c FFFD FFFD d
  EXPECT_EQ(utf8_replace_invalid("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a" + R + R + R + "b" + R + "c" + R + R + "d");
  EXPECT_EQ(utf8_replace_invalid("\xC0\xAF"), R + R);          // C0 never valid: one each
  EXPECT_EQ(utf8_replace_invalid("\xED\xA0\x80"), R + R + R);  // surrogate: ED then A0, 80
  EXPECT_EQ(utf8_replace_invalid("\xF0\x9F\x98"), R);          // truncated emoji: one
  EXPECT_EQ(utf8_replace_invalid("\xE2\x82x"), R + "x");
}

TEST(TokenizerUtf8, Sha256KnownVectors) {
  // FIPS 180-4 examples.
  EXPECT_EQ(sae::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sae::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sae::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sae::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(TokenizerUtf8, NormalizersMatchHf) {
  using sae::tok::NormForm;
  using sae::tok::unicode_lowercase;
  using sae::tok::unicode_normalize;
  // HF's Lowercase maps character by character (Rust's char::to_lowercase): full mappings, but
  // no final-sigma rule, so a word-final capital sigma becomes σ, not ς.
  EXPECT_EQ(unicode_lowercase("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 ABC"), "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x83 abc");
  EXPECT_EQ(unicode_lowercase("\xC4\xB0"), "i\xCC\x87");  // İ -> i + combining dot above
  EXPECT_EQ(unicode_normalize("e\xCC\x81", NormForm::NFC), "\xC3\xA9");
  EXPECT_EQ(unicode_normalize("\xC3\xA9", NormForm::NFD), "e\xCC\x81");
  EXPECT_EQ(unicode_normalize("\xEF\xAC\x81", NormForm::NFKC), "fi");  // the ﬁ ligature
  EXPECT_EQ(unicode_normalize("plain", NormForm::NFKD), "plain");
}
