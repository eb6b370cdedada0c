// The SVG plot writer: tick choice, labels, escaping, bar geometry proportional to the data, log
// axes for line charts.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <regex>

#include "base/svg.h"

using namespace sae::svg;

namespace {

// Values of attribute `attr` of every element named `tag`, in document order.
std::vector<double> attr_values(const std::string& svg, const std::string& tag, const std::string& attr) {
  std::vector<double> v;
  std::regex re("<" + tag + "[^>]*\\s" + attr + "=\"([-0-9.]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    v.push_back(std::stod((*it)[1]));
  return v;
}

int count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) n++;
  return n;
}

}  // namespace

TEST(Svg, NiceTicks) {
  EXPECT_EQ(nice_ticks(0, 10, 5), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  std::vector<double> unit = nice_ticks(0, 1, 5);
  ASSERT_EQ(unit.size(), 6u);
  for (size_t i = 0; i < unit.size(); i++) EXPECT_NEAR(unit[i], 0.2 * double(i), 1e-12);
  std::vector<double> t = nice_ticks(-6.2, 0, 8);
  EXPECT_LE(t.front(), -6.2);
  EXPECT_GE(t.back(), 0);
  EXPECT_EQ(t, (std::vector<double>{-7, -6, -5, -4, -3, -2, -1, 0}));
  std::vector<double> one = nice_ticks(3, 3, 4);  // a single value gets a range around it
  EXPECT_LT(one.front(), 3);
  EXPECT_GT(one.back(), 3);
  EXPECT_TRUE(nice_ticks(0, std::numeric_limits<double>::infinity(), 5).empty());
}

TEST(Svg, TickLabels) {
  EXPECT_EQ(format_tick(0), "0");
  EXPECT_EQ(format_tick(-0.0), "0");
  EXPECT_EQ(format_tick(250000), "250000");
  EXPECT_EQ(format_tick(0.30000000000000004), "0.3");
  EXPECT_EQ(format_tick(-2.5), "-2.5");
  EXPECT_EQ(format_tick(1e7), "1e+07");
}

TEST(Svg, EscapesText) {
  EXPECT_EQ(escape("a<b & \"c\" 'd'>"), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
  Plot p;
  p.title = "x < y & z";
  std::string s = histogram({0, 1}, {1}, p);
  EXPECT_NE(s.find("x &lt; y &amp; z"), std::string::npos);
  EXPECT_EQ(s.find("x < y"), std::string::npos);
}

TEST(Svg, HistogramBarsAreProportional) {
  Plot p;
  p.title = "T";
  p.xlabel = "the x";
  p.ylabel = "the y";
  p.caption = "a caption";
  p.vlines = {{1.5, "marker"}};
  std::string s = histogram({0, 1, 2, 3}, {1, 2, 4}, p);
  EXPECT_EQ(s.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(s.substr(s.size() - 7), "</svg>\n");
  for (const char* text : {">T<", ">the x<", ">the y<", ">a caption<", ">marker<"})
    EXPECT_NE(s.find(text), std::string::npos) << text;
  // Bars are the rects inside the bar group (the first rect is the background).
  std::vector<double> h = attr_values(s, "rect", "height");
  std::vector<double> w = attr_values(s, "rect", "width");
  ASSERT_EQ(h.size(), 4u);
  EXPECT_NEAR(h[2] / h[1], 2.0, 0.01);
  EXPECT_NEAR(h[3] / h[1], 4.0, 0.01);
  EXPECT_NEAR(w[1], w[2], 0.01);
  EXPECT_NE(s.find("<title>[1, 2): 2</title>"), std::string::npos);
  EXPECT_EQ(count(s, "<text"), count(s, "</text>"));
  EXPECT_EQ(count(s, "<g"), count(s, "</g>"));
}

TEST(Svg, HistogramWithoutDataSaysSo) {
  std::string s = histogram({}, {}, Plot{});
  EXPECT_NE(s.find(">no data<"), std::string::npos);
}

TEST(Svg, LineChartLogAxisAndLegend) {
  Series a{"train", {0, 1, 2, 3}, {1000, 100, 10, 1}};
  Series b{"eval", {0, 1, 2, 3}, {2000, std::nan(""), 20, -1}};  // NaN and a non-positive value are skipped
  Plot p;
  p.title = "loss";
  std::string s = line_chart({a, b}, p, true);
  EXPECT_EQ(count(s, "<polyline"), 2);
  EXPECT_NE(s.find(">train<"), std::string::npos);  // legend
  EXPECT_NE(s.find(">eval<"), std::string::npos);
  // On a log axis the four points of "train" are equally spaced vertically.
  std::smatch m;
  std::string pts = s.substr(s.find("points=\"") + 8);
  pts = pts.substr(0, pts.find('"'));
  std::regex pr("([-0-9.]+),([-0-9.]+)");
  std::vector<double> ys;
  for (auto it = std::sregex_iterator(pts.begin(), pts.end(), pr); it != std::sregex_iterator(); ++it)
    ys.push_back(std::stod((*it)[2]));
  ASSERT_EQ(ys.size(), 4u);
  EXPECT_NEAR(ys[1] - ys[0], ys[2] - ys[1], 0.02);
  EXPECT_NEAR(ys[2] - ys[1], ys[3] - ys[2], 0.02);
  // The second polyline keeps only its two usable points.
  std::string second = s.substr(s.find("<polyline", s.find("<polyline") + 1));
  second = second.substr(second.find("points=\"") + 8);
  second = second.substr(0, second.find('"'));
  EXPECT_EQ(count(second, ","), 2);
  // Tick labels at powers of ten.
  EXPECT_NE(s.find(">1000<"), std::string::npos);
  EXPECT_NE(s.find(">1<"), std::string::npos);
}
