// base/strings.h: splitting, trimming and whole-string numbers, as the option parsers use them.
#include <gtest/gtest.h>

#include "base/strings.h"

using namespace sae;

TEST(Strings, SplitKeepsEmptyPiecesAndTakesAnySeparator) {
  EXPECT_EQ(split("a,,b", ","), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(split("", ","), (std::vector<std::string>{""}));
  EXPECT_EQ(split("k=1;j=2 3", " ;"), (std::vector<std::string>{"k=1", "j=2", "3"}));
  EXPECT_EQ(trim(" \t x y \r\n"), "x y");
  EXPECT_EQ(trim("   "), "");
}

TEST(Strings, ParseFiniteTakesTheWholeStringOrNothing) {
  double v = 7;
  EXPECT_TRUE(parse_finite("-2.5e1", v));
  EXPECT_EQ(v, -25.0);
  for (const char* bad : {"", "1x", " 1", "1 ", "inf", "nan", "0x", "--1"}) {
    v = 7;
    EXPECT_FALSE(parse_finite(bad, v)) << bad;
    EXPECT_EQ(v, 7.0) << bad;  // untouched
  }
}
