#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "base/build_info.h"
#include "base/errors.h"
#include "base/svg.h"

namespace sae {

using json = nlohmann::ordered_json;  // reports keep their keys in a reading order

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double safe_div(double a, double b) { return b != 0 ? a / b : kNaN; }

// JSON numbers must be finite; undefined values (no rows, zero variance) become null.
json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

}  // namespace

// ---- EvalResult ----

std::vector<double> EvalResult::frequency() const {
  std::vector<double> f(fire_count.size());
  for (size_t j = 0; j < f.size(); j++) f[j] = rows ? double(fire_count[j]) / double(rows) : 0.0;
  return f;
}

std::vector<float> EvalResult::log10_density() const {
  std::vector<double> f = frequency();
  std::vector<float> out(f.size());
  for (size_t j = 0; j < f.size(); j++) out[j] = float(std::log10(f[j] + kDensityEps));
  return out;
}

int64_t EvalResult::l0_quantile(double q) const {
  if (rows == 0 || l0_histogram.empty()) return 0;
  int64_t target = std::max<int64_t>(1, int64_t(std::ceil(q * double(rows))));
  int64_t cum = 0;
  for (size_t v = 0; v < l0_histogram.size(); v++) {
    cum += l0_histogram[v];
    if (cum >= target) return int64_t(v);
  }
  return int64_t(l0_histogram.size()) - 1;
}

// ---- SaeEvaluator ----

SaeEvaluator::SaeEvaluator(const Sae& sae, int64_t chunk_rows) : sae_(sae) {
  // About 32 MB of dense latents per chunk: large enough for an efficient sgemm, small enough
  // that memory stays flat for any d_sae.
  chunk_ = chunk_rows > 0 ? chunk_rows : std::clamp<int64_t>((int64_t(1) << 23) / std::max<int64_t>(sae.d_sae, 1), 16, 4096);
  sum_x_.assign(size_t(sae.d_in), 0.0);
  fire_.assign(size_t(sae.d_sae), 0);
  l0_hist_.assign(size_t(sae.d_sae + 1), 0);
}

void SaeEvaluator::add(const float* x, int64_t rows) {
  const int64_t d_in = sae_.d_in, d_sae = sae_.d_sae;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_) {
    int64_t n = std::min(chunk_, rows - r0);
    lat_buf_.resize(size_t(n * d_sae));
    xhat_buf_.resize(size_t(n * d_in));
    sae_.reconstruct(x + r0 * d_in, n, lat_buf_.data(), xhat_buf_.data());
    accumulate(x + r0 * d_in, lat_buf_.data(), xhat_buf_.data(), n);
  }
}

void SaeEvaluator::accumulate(const float* x, const float* f, const float* xh, int64_t rows) {
  if (rows <= 0) return;
  const int64_t d_in = sae_.d_in, d_sae = sae_.d_sae;
  if (shift_.empty()) {
    // Shifting by a value near the mean keeps the one-pass variance sum ||x-K||^2 - n||mean-K||^2
    // free of cancellation when activations have a large common offset.
    shift_.assign(size_t(d_in), 0.0);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < d_in; j++) shift_[size_t(j)] += x[r * d_in + j];
    for (double& v : shift_) v /= double(rows);
  }
  // Per-row quantities in parallel, then summed in row order, so results do not depend on the
  // number of threads.
  const size_t nr = size_t(rows);
  std::vector<double> se(nr), xx(nr), nx2(nr), nh2(nr), dot(nr), l1(nr);
  std::vector<int64_t> l0(nr);
#pragma omp parallel for if (rows * (d_in + d_sae) > 65536)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * d_in;
    const float* hr = xh + r * d_in;
    double a = 0, b = 0, c = 0, e = 0, s = 0;
    for (int64_t j = 0; j < d_in; j++) {
      double xv = xr[j], hv = hr[j];
      double dv = xv - hv, kv = xv - shift_[size_t(j)];
      e += dv * dv;
      s += kv * kv;
      a += xv * xv;
      b += hv * hv;
      c += xv * hv;
    }
    se[size_t(r)] = e;
    xx[size_t(r)] = s;
    nx2[size_t(r)] = a;
    nh2[size_t(r)] = b;
    dot[size_t(r)] = c;
    const float* fr = f + r * d_sae;
    int64_t cnt = 0;
    double sa = 0;
    for (int64_t j = 0; j < d_sae; j++)
      if (fr[j] != 0.0f) {
        cnt++;
        sa += std::fabs(double(fr[j]));
      }
    l0[size_t(r)] = cnt;
    l1[size_t(r)] = sa;
  }
  for (int64_t r = 0; r < rows; r++) {
    size_t i = size_t(r);
    sum_se_ += se[i];
    sum_xx_ += xx[i];
    sum_xh2_ += nh2[i];
    sum_dot_ += dot[i];
    double nin = std::sqrt(nx2[i]), nout = std::sqrt(nh2[i]);
    sum_nin_ += nin;
    sum_nout_ += nout;
    if (nx2[i] > 0) {
      n_nonzero_++;
      sum_cos_ += nh2[i] > 0 ? dot[i] / (nin * nout) : 0.0;
      sum_ratio_ += nout / nin;
    }
    sum_l0_ += double(l0[i]);
    sum_l0sq_ += double(l0[i]) * double(l0[i]);
    sum_l1_ += l1[i];
    l0_hist_[size_t(l0[i])]++;
    const float* xr = x + r * d_in;
    for (int64_t j = 0; j < d_in; j++) sum_x_[size_t(j)] += double(xr[j]) - shift_[size_t(j)];
  }
  // Fire counts: each thread owns a range of latents, reading that slice of every row.
  constexpr int64_t kBlock = 512;
#pragma omp parallel for schedule(dynamic) if (rows * d_sae > 65536)
  for (int64_t j0 = 0; j0 < d_sae; j0 += kBlock) {
    int64_t j1 = std::min(d_sae, j0 + kBlock);
    for (int64_t r = 0; r < rows; r++) {
      const float* fr = f + r * d_sae;
      for (int64_t j = j0; j < j1; j++) fire_[size_t(j)] += fr[j] != 0.0f;
    }
  }
  n_ += rows;
}

EvalResult SaeEvaluator::result() const {
  EvalResult e;
  e.rows = n_;
  e.d_in = sae_.d_in;
  e.d_sae = sae_.d_sae;
  const double n = double(n_);
  double mean_sq = 0;
  for (double s : sum_x_) mean_sq += s * s;
  e.total_variance = n_ ? std::max(0.0, sum_xx_ - mean_sq / n) : kNaN;
  e.mse = safe_div(sum_se_, n * double(sae_.d_in));
  e.squared_error_per_row = safe_div(sum_se_, n);
  e.fvu = e.total_variance > 0 ? sum_se_ / e.total_variance : kNaN;
  e.explained_variance = 1.0 - e.fvu;
  e.cosine_similarity = safe_div(sum_cos_, double(n_nonzero_));
  e.l2_ratio = safe_div(sum_ratio_, double(n_nonzero_));
  e.l2_norm_in = safe_div(sum_nin_, n);
  e.l2_norm_out = safe_div(sum_nout_, n);
  e.relative_reconstruction_bias = safe_div(sum_xh2_, sum_dot_);
  e.zero_input_rows = n_ - n_nonzero_;
  e.l0_mean = safe_div(sum_l0_, n);
  e.l0_std = n_ ? std::sqrt(std::max(0.0, sum_l0sq_ / n - e.l0_mean * e.l0_mean)) : kNaN;
  e.l1_mean = safe_div(sum_l1_, n);
  e.l0_histogram = l0_hist_;
  e.fire_count = fire_;
  for (int64_t c : fire_) {
    if (c == 0) e.dead++;
    if (n_ && double(c) / n > kDenseThreshold) e.dense++;
  }
  return e;
}

// ---- decoder geometry ----

namespace {

// Rows scaled to unit length (norms in double); zero rows stay zero and are flagged.
void normalise_rows(const float* M, int64_t n, int64_t d, std::vector<float>& out, std::vector<char>& zero) {
  out.assign(size_t(n * d), 0.0f);
  zero.assign(size_t(n), 0);
#pragma omp parallel for if (n * d > 65536)
  for (int64_t i = 0; i < n; i++) {
    double ss = 0;
    for (int64_t j = 0; j < d; j++) ss += double(M[i * d + j]) * M[i * d + j];
    if (ss == 0) {
      zero[size_t(i)] = 1;
      continue;
    }
    double inv = 1.0 / std::sqrt(ss);
    for (int64_t j = 0; j < d; j++) out[size_t(i * d + j)] = float(M[i * d + j] * inv);
  }
}

// One blocked pass over the products A Bᵀ: row maxima (best match in B of each row of A) and,
// when col_max is given, column maxima (best match in A of each row of B) from the same blocks.
void blocked_max_cosine(const float* A, int64_t na, const float* B, int64_t nb, int64_t d, bool exclude_same_index,
                        Backend& be, int64_t block_rows, std::vector<float>& row_max, std::vector<float>* col_max) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> an, bn_own;
  std::vector<char> azero, bzero_own;
  normalise_rows(A, na, d, an, azero);
  const bool same = A == B && na == nb;
  if (!same) normalise_rows(B, nb, d, bn_own, bzero_own);
  const std::vector<float>& bn = same ? an : bn_own;
  const std::vector<char>& bzero = same ? azero : bzero_own;
  row_max.assign(size_t(na), nan);
  std::vector<float> colbest(size_t(nb), ninf);
  if (na > 0 && nb > 0) {
    // A block of rows of A against all of B: about 32 MB of products at a time.
    int64_t block = block_rows > 0 ? block_rows : std::clamp<int64_t>((int64_t(1) << 23) / nb, 1, 4096);
    block = std::min(block, na);
    // On the CPU the normalised host copies are the operands; another backend gets them uploaded.
    const bool on_host = be.device() == Device::cpu;
    Buffer<float> dA, dB, dC(be, size_t(block * nb));
    const float *pa = an.data(), *pb = bn.data();
    if (!on_host) {
      dA = Buffer<float>(be, an.size());
      dA.upload(an);
      pa = dA.data();
      if (same) {
        pb = pa;
      } else {
        dB = Buffer<float>(be, bn.size());
        dB.upload(bn);
        pb = dB.data();
      }
    }
    std::vector<float> host_c;
    for (int64_t i0 = 0; i0 < na; i0 += block) {
      const int64_t m = std::min(block, na - i0);
      be.gemm(false, true, m, nb, d, 1.0f, pa + i0 * d, d, pb, d, 0.0f, dC.data(), nb);
      const float* C = dC.data();
      if (!on_host) {
        be.sync();
        host_c.resize(size_t(m * nb));
        be.to_host(host_c.data(), dC.data(), host_c.size() * sizeof(float));
        C = host_c.data();
      }
      auto candidate = [&](int64_t i, int64_t j) {
        return !azero[size_t(i)] && !bzero[size_t(j)] && !(exclude_same_index && i == j);
      };
#pragma omp parallel for if (m * nb > 65536)
      for (int64_t r = 0; r < m; r++) {
        const int64_t i = i0 + r;
        const float* row = C + r * nb;
        float best = ninf;
        for (int64_t j = 0; j < nb; j++)
          if (candidate(i, j)) best = std::max(best, row[j]);
        // Rounding can push the cosine of (anti)parallel unit vectors a hair past +-1.
        if (best > ninf) row_max[size_t(i)] = std::clamp(best, -1.0f, 1.0f);
      }
      if (col_max) {
        // Each thread owns a range of columns and scans this block's rows for them.
        constexpr int64_t kCols = 256;
#pragma omp parallel for schedule(dynamic) if (m * nb > 65536)
        for (int64_t j0 = 0; j0 < nb; j0 += kCols) {
          const int64_t j1 = std::min(nb, j0 + kCols);
          for (int64_t r = 0; r < m; r++)
            for (int64_t j = j0; j < j1; j++)
              if (candidate(i0 + r, j)) colbest[size_t(j)] = std::max(colbest[size_t(j)], C[r * nb + j]);
        }
      }
    }
  }
  if (col_max) {
    col_max->assign(size_t(nb), nan);
    for (int64_t j = 0; j < nb; j++)
      if (colbest[size_t(j)] > ninf) (*col_max)[size_t(j)] = std::clamp(colbest[size_t(j)], -1.0f, 1.0f);
  }
}

}  // namespace

std::vector<float> max_cosine(const float* A, int64_t na, const float* B, int64_t nb, int64_t d,
                              bool exclude_same_index, Backend& be, int64_t block_rows) {
  std::vector<float> out;
  blocked_max_cosine(A, na, B, nb, d, exclude_same_index, be, block_rows, out, nullptr);
  return out;
}

void max_cosine_both_ways(const float* A, int64_t na, const float* B, int64_t nb, int64_t d, Backend& be,
                          std::vector<float>& a_to_b, std::vector<float>& b_to_a, int64_t block_rows) {
  blocked_max_cosine(A, na, B, nb, d, false, be, block_rows, a_to_b, &b_to_a);
}

Summary summarize(const std::vector<float>& v) {
  std::vector<double> s;
  s.reserve(v.size());
  for (float x : v)
    if (std::isfinite(x)) s.push_back(x);
  Summary r;
  r.count = int64_t(s.size());
  if (s.empty()) {
    r.mean = r.min = r.p10 = r.median = r.p90 = r.p99 = r.max = kNaN;
    return r;
  }
  std::sort(s.begin(), s.end());
  double sum = 0;
  for (double x : s) sum += x;
  r.mean = sum / double(s.size());
  // Nearest-rank quantiles: the smallest value with at least q of the values at or below it.
  auto q = [&](double p) {
    size_t k = size_t(std::max(1.0, std::ceil(p * double(s.size()))));
    return s[std::min(k, s.size()) - 1];
  };
  r.min = s.front();
  r.max = s.back();
  r.p10 = q(0.10);
  r.median = q(0.50);
  r.p90 = q(0.90);
  r.p99 = q(0.99);
  return r;
}

GeometryResult decoder_geometry(const Sae& sae, Backend& be) {
  GeometryResult g;
  g.max_cos = max_cosine(sae.W_dec.data(), sae.d_sae, sae.W_dec.data(), sae.d_sae, sae.d_in, true, be);
  g.summary = summarize(g.max_cos);
  for (int64_t j = 0; j < sae.d_sae; j++) {
    bool zero = true;
    for (int64_t i = 0; i < sae.d_in && zero; i++) zero = sae.W_dec[size_t(j * sae.d_in + i)] == 0.0f;
    g.zero_rows += zero;
  }
  for (float c : g.max_cos) g.above_threshold += std::isfinite(c) && c > kMatchThreshold;
  return g;
}

CompareResult compare_decoders(const Sae& a, const Sae& b, Backend& be, const std::string& where) {
  if (a.d_in != b.d_in)
    throw InputError(where + ": decoder rows have d_in " + std::to_string(b.d_in) + ", the evaluated SAE's have " +
                     std::to_string(a.d_in));
  CompareResult c;
  c.d_sae_other = b.d_sae;
  auto matched = [](const std::vector<float>& v) {
    int64_t m = 0;
    for (float x : v) m += std::isfinite(x) && x > kMatchThreshold;
    return v.empty() ? kNaN : double(m) / double(v.size());
  };
  std::vector<float> ab, ba;
  max_cosine_both_ways(a.W_dec.data(), a.d_sae, b.W_dec.data(), b.d_sae, a.d_in, be, ab, ba);
  c.a_to_b = summarize(ab);
  c.b_to_a = summarize(ba);
  c.matched_a_to_b = matched(ab);
  c.matched_b_to_a = matched(ba);
  return c;
}

// ---- report ----

namespace {

json summary_json(const Summary& s) {
  return json{{"count", s.count}, {"mean", num(s.mean)}, {"min", num(s.min)},   {"p10", num(s.p10)},
              {"median", num(s.median)}, {"p90", num(s.p90)}, {"p99", num(s.p99)}, {"max", num(s.max)}};
}

std::string fmt(double v, const char* f = "%.6g") {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string pct(double num_, double den) {
  if (den <= 0) return "n/a";
  char buf[32];
  snprintf(buf, sizeof buf, "%.2f%%", 100.0 * num_ / den);
  return buf;
}

}  // namespace

json eval_report_json(const EvalReport& r) {
  const EvalResult& e = r.eval;
  json j;
  j["tool"] = "sae-eval";
  j["version"] = build_info::version();
  if (r.sae) {
    const Sae& s = *r.sae;
    json js{{"path", r.sae_path},
            {"format", s.source_format},
            {"architecture", s.arch},
            {"d_in", s.d_in},
            {"d_sae", s.d_sae},
            {"hook", s.hook},
            {"model", s.model},
            {"apply_b_dec_to_input", s.apply_b_dec_to_input},
            {"normalize_activations", s.normalize_activations}};
    if (s.arch == "topk") js["k"] = s.k;
    j["sae"] = js;
  }
  j["inputs"] = r.inputs;
  j["rows"] = e.rows;
  j["reconstruction"] = json{{"mse", num(e.mse)},
                             {"squared_error_per_row", num(e.squared_error_per_row)},
                             {"total_variance", num(e.total_variance)},
                             {"fvu", num(e.fvu)},
                             {"explained_variance", num(e.explained_variance)},
                             {"cosine_similarity", num(e.cosine_similarity)},
                             {"l2_norm_in", num(e.l2_norm_in)},
                             {"l2_norm_out", num(e.l2_norm_out)},
                             {"l2_ratio", num(e.l2_ratio)},
                             {"relative_reconstruction_bias", num(e.relative_reconstruction_bias)},
                             {"zero_input_rows", e.zero_input_rows}};
  json hist = json::array();
  for (size_t v = 0; v < e.l0_histogram.size(); v++)
    if (e.l0_histogram[v]) hist.push_back(json::array({int64_t(v), e.l0_histogram[v]}));
  int64_t l0_min = -1, l0_max = -1;
  for (size_t v = 0; v < e.l0_histogram.size(); v++)
    if (e.l0_histogram[v]) {
      if (l0_min < 0) l0_min = int64_t(v);
      l0_max = int64_t(v);
    }
  json l0{{"mean", num(e.l0_mean)}, {"std", num(e.l0_std)}, {"histogram", hist}};
  if (e.rows) {
    l0["min"] = l0_min;
    l0["p10"] = e.l0_quantile(0.10);
    l0["median"] = e.l0_quantile(0.50);
    l0["p90"] = e.l0_quantile(0.90);
    l0["max"] = l0_max;
  }
  j["sparsity"] = json{{"l0", l0}, {"l1", num(e.l1_mean)}};
  std::vector<float> alive_log;
  for (size_t k = 0; k < e.fire_count.size(); k++)
    if (e.fire_count[k]) alive_log.push_back(float(std::log10(double(e.fire_count[k]) / double(e.rows))));
  Summary fs = summarize(alive_log);
  j["latents"] = json{{"dead", e.dead},
                      {"dead_fraction", num(safe_div(double(e.dead), double(e.d_sae)))},
                      {"dense", e.dense},
                      {"dense_fraction", num(safe_div(double(e.dense), double(e.d_sae)))},
                      {"dense_threshold", kDenseThreshold},
                      {"alive", e.d_sae - e.dead},
                      {"log10_frequency_alive", summary_json(fs)}};
  if (r.has_geometry) {
    const GeometryResult& g = r.geometry;
    j["decoder_geometry"] = json{{"max_cosine", summary_json(g.summary)},
                                 {"zero_norm_rows", g.zero_rows},
                                 {"rows_above_match_threshold", g.above_threshold},
                                 {"match_threshold", kMatchThreshold}};
  }
  if (r.has_compare) {
    const CompareResult& c = r.compare;
    json ab = summary_json(c.a_to_b);
    ab["fraction_matched"] = num(c.matched_a_to_b);
    json ba = summary_json(c.b_to_a);
    ba["fraction_matched"] = num(c.matched_b_to_a);
    j["compare"] = json{{"path", r.compare_path},
                        {"d_sae", c.d_sae_other},
                        {"match_threshold", kMatchThreshold},
                        {"sae_to_compare", ab},
                        {"compare_to_sae", ba}};
  }
  return j;
}

std::string eval_report_table(const EvalReport& r) {
  const EvalResult& e = r.eval;
  std::ostringstream o;
  auto row = [&](const std::string& k, const std::string& v) {
    char buf[256];
    snprintf(buf, sizeof buf, "  %-30s %s\n", k.c_str(), v.c_str());
    o << buf;
  };
  if (r.sae) {
    const Sae& s = *r.sae;
    std::string arch = s.arch + (s.arch == "topk" ? " k=" + std::to_string(s.k) : "");
    o << "SAE " << r.sae_path << " (" << s.source_format << ", " << arch << ", d_in " << s.d_in << ", d_sae "
      << s.d_sae << ") on " << e.rows << " rows\n";
  }
  o << "reconstruction\n";
  row("mse (per element)", fmt(e.mse));
  row("fvu", fmt(e.fvu, "%.5f"));
  row("explained variance", fmt(e.explained_variance, "%.5f"));
  row("cosine similarity", fmt(e.cosine_similarity, "%.5f"));
  row("l2 ratio |x_hat|/|x|", fmt(e.l2_ratio, "%.5f"));
  row("relative reconstruction bias", fmt(e.relative_reconstruction_bias, "%.5f"));
  o << "sparsity\n";
  row("L0 mean (std)", fmt(e.l0_mean, "%.3f") + " (" + fmt(e.l0_std, "%.3f") + ")");
  if (e.rows)
    row("L0 p10 / median / p90", std::to_string(e.l0_quantile(0.1)) + " / " + std::to_string(e.l0_quantile(0.5)) +
                                      " / " + std::to_string(e.l0_quantile(0.9)));
  row("L1 mean", fmt(e.l1_mean));
  o << "latents\n";
  row("dead (never fired)", std::to_string(e.dead) + " (" + pct(double(e.dead), double(e.d_sae)) + ")");
  row("dense (> 10% of rows)", std::to_string(e.dense) + " (" + pct(double(e.dense), double(e.d_sae)) + ")");
  if (r.has_geometry) {
    const Summary& s = r.geometry.summary;
    o << "decoder geometry (max cosine with another row)\n";
    row("mean / median", fmt(s.mean, "%.4f") + " / " + fmt(s.median, "%.4f"));
    row("p90 / p99 / max", fmt(s.p90, "%.4f") + " / " + fmt(s.p99, "%.4f") + " / " + fmt(s.max, "%.4f"));
    row("rows above 0.9", std::to_string(r.geometry.above_threshold));
  }
  if (r.has_compare) {
    const CompareResult& c = r.compare;
    o << "compare with " << r.compare_path << " (d_sae " << c.d_sae_other << ")\n";
    row("mean max cosine sae -> other", fmt(c.a_to_b.mean, "%.4f"));
    row("mean max cosine other -> sae", fmt(c.b_to_a.mean, "%.4f"));
    row("matched > 0.9 sae -> other", fmt(100 * c.matched_a_to_b, "%.2f") + "%");
    row("matched > 0.9 other -> sae", fmt(100 * c.matched_b_to_a, "%.2f") + "%");
  }
  return o.str();
}

std::map<std::string, std::string> eval_report_plots(const EvalReport& r) {
  const EvalResult& e = r.eval;
  std::map<std::string, std::string> out;

  // Firing frequency on a log10 axis, alive latents only (log10 0 is -inf); the axis starts at the
  // smallest frequency these rows can show, 1/rows.
  {
    std::vector<double> logs;
    for (int64_t c : e.fire_count)
      if (c) logs.push_back(std::log10(double(c) / double(e.rows)));
    double lo = e.rows ? std::log10(1.0 / double(e.rows)) : -1;
    const double widths[] = {0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0};
    double w = 1.0;
    for (double c : widths)
      if (-lo / c <= 50) {
        w = c;
        break;
      }
    lo = std::floor(lo / w - 1e-9) * w;
    int nb = std::max(1, int(std::ceil(-lo / w - 1e-9)));
    std::vector<double> edges(size_t(nb + 1)), counts(size_t(nb), 0.0);
    for (int i = 0; i <= nb; i++) edges[size_t(i)] = lo + i * w;
    for (double v : logs) {
      int b = int(std::floor((v - lo) / w + 1e-9));
      counts[size_t(std::clamp(b, 0, nb - 1))] += 1;
    }
    svg::Plot p;
    p.title = "Latent firing frequency";
    p.xlabel = "log10(firing frequency)   (fraction of rows on which a latent is non-zero)";
    p.ylabel = "latents";
    p.caption = std::to_string(e.d_sae - e.dead) + " of " + std::to_string(e.d_sae) + " latents fired in " +
                std::to_string(e.rows) + " rows; " + std::to_string(e.dead) + " dead (never fired, not shown); " +
                std::to_string(e.dense) + " dense (> 10% of rows)";
    p.vlines.push_back({std::log10(kDenseThreshold), "dense: 10%"});
    out["freq_hist.svg"] = svg::histogram(edges, counts, p);
  }

  // L0 per row: one bar per value when the range is small, wider integer bins otherwise.
  {
    int64_t lo = -1, hi = -1;
    for (size_t v = 0; v < e.l0_histogram.size(); v++)
      if (e.l0_histogram[v]) {
        if (lo < 0) lo = int64_t(v);
        hi = int64_t(v);
      }
    std::vector<double> edges, counts;
    if (lo >= 0) {
      // At least a dozen integer positions, so a TopK SAE's single value reads as a bar on an
      // axis rather than a filled box.
      if (hi - lo + 1 < 12) {
        int64_t pad = (12 - (hi - lo + 1) + 1) / 2;
        lo = std::max<int64_t>(0, lo - pad);
        hi = std::min<int64_t>(int64_t(e.l0_histogram.size()) - 1, std::max(hi + pad, lo + 11));
      }
      int64_t w = std::max<int64_t>(1, (hi - lo + 1 + 49) / 50);
      for (int64_t b = lo; b <= hi; b += w) {
        edges.push_back(double(b) - 0.5);
        double c = 0;
        for (int64_t v = b; v < b + w && v <= hi; v++) c += double(e.l0_histogram[size_t(v)]);
        counts.push_back(c);
      }
      edges.push_back(edges.back() + double(w));
    }
    svg::Plot p;
    p.title = "L0: active latents per row";
    p.xlabel = "L0 (number of non-zero latents in a row)";
    p.ylabel = "rows";
    p.caption = "mean " + fmt(e.l0_mean, "%.2f") + ", median " + std::to_string(e.l0_quantile(0.5)) + ", over " +
                std::to_string(e.rows) + " rows";
    p.vlines.push_back({e.l0_mean, "mean " + fmt(e.l0_mean, "%.2f")});
    out["l0_hist.svg"] = svg::histogram(edges, counts, p);
  }

  if (r.has_geometry) {
    const GeometryResult& g = r.geometry;
    const double w = 0.02;
    double lo = 0;
    if (g.summary.count && g.summary.min < 0) lo = std::floor(g.summary.min / w) * w;
    int nb = int(std::ceil((1.0 - lo) / w - 1e-9));
    std::vector<double> edges(size_t(nb + 1)), counts(size_t(nb), 0.0);
    for (int i = 0; i <= nb; i++) edges[size_t(i)] = lo + i * w;
    for (float c : g.max_cos)
      if (std::isfinite(c)) counts[size_t(std::clamp(int(std::floor((c - lo) / w)), 0, nb - 1))] += 1;
    svg::Plot p;
    p.title = "Decoder geometry";
    p.xlabel = "highest cosine similarity of a decoder row with another row";
    p.ylabel = "latents";
    p.caption = "mean " + fmt(g.summary.mean, "%.3f") + ", median " + fmt(g.summary.median, "%.3f") + "; " +
                std::to_string(g.above_threshold) + " of " + std::to_string(g.max_cos.size()) +
                " rows above 0.9" + (g.zero_rows ? "; " + std::to_string(g.zero_rows) + " zero rows not shown" : "");
    p.vlines.push_back({kMatchThreshold, "0.9"});
    out["decoder_cos_hist.svg"] = svg::histogram(edges, counts, p);
  }
  return out;
}

}  // namespace sae
