// Text in (tokenizer/documents.h): the document reader over plain text, lines and JSONL with its
// exact errors, and the windows sae-collect and sae-eval cut documents into.
#include <gtest/gtest.h>

#include "base/errors.h"
#include "support/tokenizer_util.h"  // TempDir with write()
#include "tokenizer/documents.h"

using namespace sae;

namespace {

std::vector<TextDocument> read_all(const std::vector<std::string>& files, const std::string& field, bool lines,
                                   bool replace = false) {
  TextDocumentReader r(files, field, lines, replace);
  std::vector<TextDocument> v;
  TextDocument d;
  while (r.next(d)) v.push_back(d);
  return v;
}

template <class F>
std::string input_error(F f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no InputError";
  return "";
}

}  // namespace

TEST(TextDocumentReader, PlainTextBlankLinesLinesAndJsonl) {
  tokenizer_test::TempDir d;
  d.write("a.txt", "\n\nfirst doc\nsecond line\r\n\n \t\nsecond doc\n\n\nthird");
  d.write("b.txt", "fourth\n");
  auto v = read_all({d / "a.txt", d / "b.txt"}, "", false);
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[0].text, "first doc\nsecond line");
  EXPECT_EQ(v[0].line, 3);
  EXPECT_EQ(v[1].text, "second doc");
  EXPECT_EQ(v[1].line, 7);
  EXPECT_EQ(v[2].text, "third");
  EXPECT_EQ(v[3].text, "fourth");
  EXPECT_EQ(v[3].file, d / "b.txt");

  // One per line: empty lines are (empty) documents.
  v = read_all({d / "a.txt"}, "", true);
  ASSERT_EQ(v.size(), 10u);
  EXPECT_EQ(v[2].text, "first doc");
  EXPECT_EQ(v[3].text, "second line");
  EXPECT_EQ(v[0].text, "");

  d.write("c.jsonl", "{\"text\": \"a\\n\\nb\", \"id\": 1}\n\n{\"text\": \"\"}\n");
  v = read_all({d / "c.jsonl"}, "text", false);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].text, "a\n\nb");
  EXPECT_EQ(v[1].text, "");
  EXPECT_EQ(v[1].line, 3);
}

TEST(TextDocumentReader, BadInputNamesFileLineAndOffset) {
  tokenizer_test::TempDir d;
  d.write("bad.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n");
  EXPECT_EQ(input_error([&] { read_all({d / "bad.jsonl"}, "text", false); }),
            d / "bad.jsonl" + ": line 2: no string field \"text\" (--jsonl-field names the field that holds the text)");
  d.write("bad2.jsonl", "{\"text\": \"ok\"\n");
  EXPECT_EQ(input_error([&] { read_all({d / "bad2.jsonl"}, "text", false); }).rfind(d / "bad2.jsonl" + ": line 1: invalid JSON (", 0), 0u);
  EXPECT_EQ(input_error([&] { read_all({d / "missing.txt"}, "", false); }), d / "missing.txt" + ": No such file or directory");

  // Invalid UTF-8 (a lone continuation byte 0x80 at byte 12 of the file, on line 2): refused
  // with the same message as sae-tokenize, or read as U+FFFD.
  d.write("u.txt", "good line\n\nab\x80z\n");
  EXPECT_EQ(input_error([&] { read_all({d / "u.txt"}, "", false); }),
            d / "u.txt" + ": line 3: invalid UTF-8 at byte offset 13 (byte 0x80); --invalid-utf8 replace reads it as U+FFFD");
  auto v = read_all({d / "u.txt"}, "", false, true);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].text, "ab\xEF\xBF\xBDz");
  d.write("u.jsonl", "{\"text\": \"x\xff\"}\n");
  EXPECT_EQ(input_error([&] { read_all({d / "u.jsonl"}, "text", false); }),
            d / "u.jsonl" + ": line 1: invalid UTF-8 at byte offset 11 (byte 0xFF); --invalid-utf8 replace reads it as U+FFFD");
  v = read_all({d / "u.jsonl"}, "text", false, true);
  EXPECT_EQ(v[0].text, "x\xEF\xBF\xBD");
}

TEST(TextWindows, CutLikeCollect) {
  std::vector<TextWindow> w;
  append_windows({10, 11, 12, 13, 14, 15, 16}, 3, 1, 4, w);  // 3 text tokens per window
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].tokens, (std::vector<int32_t>{1, 10, 11, 12}));
  EXPECT_EQ(w[1].tokens, (std::vector<int32_t>{1, 13, 14, 15}));
  EXPECT_EQ(w[2].tokens, (std::vector<int32_t>{1, 16}));
  for (const auto& x : w) EXPECT_EQ(x.doc, 3);
  append_windows({}, 4, 1, 4, w);  // an empty document has no windows
  EXPECT_EQ(w.size(), 3u);
  append_windows({20, 21, 22}, 5, 1, 4, w);  // exactly one full window
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[3].tokens, (std::vector<int32_t>{1, 20, 21, 22}));
  EXPECT_THROW(append_windows({1}, 0, 1, 1, w), UsageError);
}
