// A tiny SVG plot writer: histograms and line charts with axes, ticks, labels, a title and a
// caption, as self-contained SVG text that a browser opens directly. Used for sae-eval's plots and
// meant for loss curves and dashboards too.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace sae::svg {

struct Plot {
  std::string title, xlabel, ylabel;
  std::string caption;  // one line of small text under the x axis label
  int width = 720, height = 440;
  // Vertical reference lines (x position, label), drawn dashed across the plot area.
  std::vector<std::pair<double, std::string>> vlines;
};

// Bars over bins [edges[i], edges[i+1]) of heights counts[i] (edges.size() == counts.size() + 1,
// edges increasing; counts non-negative). Each bar carries a tooltip with its bin and count.
std::string histogram(const std::vector<double>& edges, const std::vector<double>& counts, const Plot& p);

struct Series {
  std::string label;
  std::vector<double> x, y;  // same length; non-finite points (and y <= 0 on a log axis) are skipped
};
// One polyline per series; a legend when there is more than one. log_y: logarithmic y axis with
// ticks at powers of ten.
std::string line_chart(const std::vector<Series>& series, const Plot& p, bool log_y = false);

// Axis helpers, exposed for tests.
// About `target` evenly spaced round numbers (steps of 1, 2 or 5 times a power of ten) covering
// [lo, hi]; the first is <= lo and the last >= hi.
std::vector<double> nice_ticks(double lo, double hi, int target);
// A short label for a tick value: integers without decimals, otherwise up to 4 significant digits.
std::string format_tick(double v);
// XML text escaping (& < > " ').
std::string escape(const std::string& s);

}  // namespace sae::svg
