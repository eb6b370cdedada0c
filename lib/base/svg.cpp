#include "base/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace sae::svg {

namespace {

// Colour-blind-safe palette (Okabe–Ito) for series and bars.
const char* const kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};

std::string num(double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// The plot area inside the margins, and the mapping from data to pixels.
struct Frame {
  double left, right, top, bottom;  // pixel bounds of the plot area
  double xlo, xhi, ylo, yhi;        // data bounds
  bool log_y = false;
  double sx(double x) const { return left + (x - xlo) / (xhi - xlo) * (right - left); }
  double sy(double y) const {
    double t = log_y ? (std::log10(y) - ylo) / (yhi - ylo) : (y - ylo) / (yhi - ylo);
    return bottom - t * (bottom - top);
  }
};

Frame make_frame(const Plot& p) {
  Frame f{};
  f.left = 78;
  f.right = p.width - 24;
  f.top = p.title.empty() ? 20 : 46;
  f.bottom = p.height - (p.caption.empty() ? 56 : 76);
  return f;
}

void open_svg(std::ostringstream& o, const Plot& p) {
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << p.width << "\" height=\"" << p.height
    << "\" viewBox=\"0 0 " << p.width << " " << p.height
    << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  o << "<rect x=\"0\" y=\"0\" width=\"" << p.width << "\" height=\"" << p.height << "\" fill=\"white\"/>\n";
  if (!p.title.empty())
    o << "<text x=\"" << p.width / 2 << "\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">"
      << escape(p.title) << "</text>\n";
}

// Grid, ticks, tick labels, axis lines and axis labels. yticks are data values (log10 of them
// when log_y).
void draw_axes(std::ostringstream& o, const Plot& p, const Frame& f, const std::vector<double>& xticks,
               const std::vector<double>& yticks) {
  o << "<g stroke=\"#dddddd\" stroke-width=\"1\">\n";
  for (double t : yticks) {
    double y = f.log_y ? f.bottom - (t - f.ylo) / (f.yhi - f.ylo) * (f.bottom - f.top) : f.sy(t);
    o << "<line x1=\"" << num(f.left) << "\" y1=\"" << num(y) << "\" x2=\"" << num(f.right) << "\" y2=\"" << num(y)
      << "\"/>\n";
  }
  o << "</g>\n";
  o << "<g font-size=\"11\" fill=\"#333333\">\n";
  for (double t : xticks) {
    double x = f.sx(t);
    o << "<line x1=\"" << num(x) << "\" y1=\"" << num(f.bottom) << "\" x2=\"" << num(x) << "\" y2=\""
      << num(f.bottom + 5) << "\" stroke=\"#333333\"/>\n";
    o << "<text x=\"" << num(x) << "\" y=\"" << num(f.bottom + 18) << "\" text-anchor=\"middle\">"
      << escape(format_tick(t)) << "</text>\n";
  }
  for (double t : yticks) {
    double y = f.log_y ? f.bottom - (t - f.ylo) / (f.yhi - f.ylo) * (f.bottom - f.top) : f.sy(t);
    std::string label = f.log_y ? format_tick(std::pow(10.0, t)) : format_tick(t);
    o << "<line x1=\"" << num(f.left - 5) << "\" y1=\"" << num(y) << "\" x2=\"" << num(f.left) << "\" y2=\"" << num(y)
      << "\" stroke=\"#333333\"/>\n";
    o << "<text x=\"" << num(f.left - 8) << "\" y=\"" << num(y + 4) << "\" text-anchor=\"end\">" << escape(label)
      << "</text>\n";
  }
  o << "</g>\n";
  o << "<g stroke=\"#333333\" stroke-width=\"1\">\n";
  o << "<line x1=\"" << num(f.left) << "\" y1=\"" << num(f.bottom) << "\" x2=\"" << num(f.right) << "\" y2=\""
    << num(f.bottom) << "\"/>\n";
  o << "<line x1=\"" << num(f.left) << "\" y1=\"" << num(f.top) << "\" x2=\"" << num(f.left) << "\" y2=\""
    << num(f.bottom) << "\"/>\n";
  o << "</g>\n";
  if (!p.xlabel.empty())
    o << "<text x=\"" << num((f.left + f.right) / 2) << "\" y=\"" << num(f.bottom + 38)
      << "\" text-anchor=\"middle\" font-size=\"13\">" << escape(p.xlabel) << "</text>\n";
  if (!p.ylabel.empty()) {
    double cy = (f.top + f.bottom) / 2;
    o << "<text x=\"18\" y=\"" << num(cy) << "\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 18 "
      << num(cy) << ")\">" << escape(p.ylabel) << "</text>\n";
  }
  if (!p.caption.empty())
    o << "<text x=\"" << num((f.left + f.right) / 2) << "\" y=\"" << num(f.bottom + 60)
      << "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555555\">" << escape(p.caption) << "</text>\n";
}

void draw_vlines(std::ostringstream& o, const Plot& p, const Frame& f) {
  for (const auto& [v, label] : p.vlines) {
    if (!std::isfinite(v) || v < f.xlo || v > f.xhi) continue;
    double x = f.sx(v);
    o << "<line x1=\"" << num(x) << "\" y1=\"" << num(f.top) << "\" x2=\"" << num(x) << "\" y2=\"" << num(f.bottom)
      << "\" stroke=\"#D55E00\" stroke-width=\"1.5\" stroke-dasharray=\"5,4\"/>\n";
    bool right_half = x > (f.left + f.right) / 2;
    o << "<text x=\"" << num(right_half ? x - 4 : x + 4) << "\" y=\"" << num(f.top + 12) << "\" text-anchor=\""
      << (right_half ? "end" : "start")
      << "\" font-size=\"11\" fill=\"#D55E00\" stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">" << escape(label) << "</text>\n";
  }
}

}  // namespace

std::string escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {
    double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  if (target < 1) target = 1;
  double raw = (hi - lo) / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  double first = std::floor(lo / step + 1e-9) * step;
  double last = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> t;
  for (int i = 0;; i++) {
    double v = first + i * step;
    if (v > last + step * 1e-6) break;
    // Snap to the step grid so labels read 0.3, not 0.30000000000000004.
    v = std::round(v / step) * step;
    if (std::fabs(v) < step * 1e-9) v = 0;
    t.push_back(v);
  }
  return t;
}

std::string format_tick(double v) {
  char buf[32];
  if (!std::isfinite(v)) return "";
  if (std::fabs(v - std::round(v)) < 1e-9 * std::max(1.0, std::fabs(v)) && std::fabs(v) < 1e6) {
    snprintf(buf, sizeof buf, "%.0f", v == 0 ? 0.0 : v);
  } else {
    snprintf(buf, sizeof buf, "%.4g", v);
  }
  return buf;
}

std::string histogram(const std::vector<double>& edges, const std::vector<double>& counts, const Plot& p) {
  std::ostringstream o;
  open_svg(o, p);
  Frame f = make_frame(p);
  if (counts.empty() || edges.size() != counts.size() + 1) {
    o << "<text x=\"" << p.width / 2 << "\" y=\"" << p.height / 2 << "\" text-anchor=\"middle\">no data</text>\n</svg>\n";
    return o.str();
  }
  double cmax = 0;
  for (double c : counts) cmax = std::max(cmax, c);
  std::vector<double> xt = nice_ticks(edges.front(), edges.back(), 8);
  std::vector<double> yt = nice_ticks(0, cmax > 0 ? cmax : 1, 5);
  // The x axis spans the bins exactly; ticks outside it are dropped.
  f.xlo = edges.front();
  f.xhi = edges.back();
  f.ylo = 0;
  f.yhi = yt.back();
  std::vector<double> xin;
  for (double t : xt)
    if (t >= f.xlo - 1e-9 * (f.xhi - f.xlo) && t <= f.xhi + 1e-9 * (f.xhi - f.xlo)) xin.push_back(t);
  draw_axes(o, p, f, xin, yt);
  o << "<g fill=\"" << kPalette[0] << "\">\n";
  for (size_t i = 0; i < counts.size(); i++) {
    double x0 = f.sx(edges[i]), x1 = f.sx(edges[i + 1]);
    double w = x1 - x0;
    if (w > 3) {  // a hairline gap between wide bars
      x0 += 0.5;
      w -= 1;
    }
    double y = f.sy(counts[i]);
    o << "<rect x=\"" << num(x0) << "\" y=\"" << num(y) << "\" width=\"" << num(std::max(w, 0.5)) << "\" height=\""
      << num(f.bottom - y) << "\"><title>[" << escape(format_tick(edges[i])) << ", "
      << escape(format_tick(edges[i + 1])) << "): " << escape(format_tick(counts[i])) << "</title></rect>\n";
  }
  o << "</g>\n";
  draw_vlines(o, p, f);
  o << "</svg>\n";
  return o.str();
}

std::string line_chart(const std::vector<Series>& series, const Plot& p, bool log_y) {
  std::ostringstream o;
  open_svg(o, p);
  Frame f = make_frame(p);
  f.log_y = log_y;
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  auto usable = [&](double x, double y) { return std::isfinite(x) && std::isfinite(y) && (!log_y || y > 0); };
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); i++)
      if (usable(s.x[i], s.y[i])) {
        xlo = std::min(xlo, s.x[i]);
        xhi = std::max(xhi, s.x[i]);
        double y = log_y ? std::log10(s.y[i]) : s.y[i];
        ylo = std::min(ylo, y);
        yhi = std::max(yhi, y);
      }
  if (!std::isfinite(xlo)) {
    o << "<text x=\"" << p.width / 2 << "\" y=\"" << p.height / 2 << "\" text-anchor=\"middle\">no data</text>\n</svg>\n";
    return o.str();
  }
  std::vector<double> xt = nice_ticks(xlo, xhi, 8);
  std::vector<double> yt;
  if (log_y) {
    double a = std::floor(ylo), b = std::ceil(yhi);
    if (a == b) b = a + 1;
    for (double e = a; e <= b + 1e-9; e += 1) yt.push_back(e);
  } else {
    yt = nice_ticks(ylo, yhi, 5);
  }
  f.xlo = xt.front();
  f.xhi = xt.back();
  f.ylo = yt.front();
  f.yhi = yt.back();
  draw_axes(o, p, f, xt, yt);
  for (size_t si = 0; si < series.size(); si++) {
    const auto& s = series[si];
    const char* colour = kPalette[si % (sizeof kPalette / sizeof kPalette[0])];
    o << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.8\" points=\"";
    bool first = true;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); i++) {
      if (!usable(s.x[i], s.y[i])) continue;
      o << (first ? "" : " ") << num(f.sx(s.x[i])) << "," << num(f.sy(s.y[i]));
      first = false;
    }
    o << "\"><title>" << escape(s.label) << "</title></polyline>\n";
  }
  if (series.size() > 1) {
    double lx = f.right - 170, ly = f.top + 8;
    o << "<rect x=\"" << num(lx - 8) << "\" y=\"" << num(ly - 4) << "\" width=\"174\" height=\""
      << num(18.0 * series.size() + 6) << "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#cccccc\"/>\n";
    for (size_t si = 0; si < series.size(); si++) {
      const char* colour = kPalette[si % (sizeof kPalette / sizeof kPalette[0])];
      double y = ly + 18.0 * si + 9;
      o << "<line x1=\"" << num(lx) << "\" y1=\"" << num(y) << "\" x2=\"" << num(lx + 22) << "\" y2=\"" << num(y)
        << "\" stroke=\"" << colour << "\" stroke-width=\"2.5\"/>\n";
      o << "<text x=\"" << num(lx + 28) << "\" y=\"" << num(y + 4) << "\" font-size=\"11\">"
        << escape(series[si].label) << "</text>\n";
    }
  }
  draw_vlines(o, p, f);
  o << "</svg>\n";
  return o.str();
}

}  // namespace sae::svg
