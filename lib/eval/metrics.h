// Structural SAE metrics computed in one streaming pass over activation rows: reconstruction
// (MSE, FVU, cosine similarity, norm ratio, relative reconstruction bias), sparsity (L0, L1),
// latent firing frequencies (dead and dense latents, feature density), and decoder geometry
// (each decoder row's highest cosine similarity with another row, or with another SAE's rows).
// Memory is O(d_in + d_sae + chunk), never O(rows). docs/eval.md defines every number.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "sae/sae.h"

namespace sae {

// Latents firing on more than this fraction of rows are "dense".
constexpr double kDenseThreshold = 0.1;
// SAELens's feature-density file stores log10(frequency + 1e-10), so never-firing latents read -10.
constexpr double kDensityEps = 1e-10;
// Two decoder rows "match" when their cosine similarity exceeds this (--compare).
constexpr double kMatchThreshold = 0.9;

struct EvalResult {
  int64_t rows = 0, d_in = 0, d_sae = 0;

  // Reconstruction (x the input row, x_hat the SAE's reconstruction in activation space).
  double mse = 0;                    // sum ||x - x_hat||^2 / (rows * d_in)
  double squared_error_per_row = 0;  // sum ||x - x_hat||^2 / rows
  double total_variance = 0;         // sum ||x - mean(x)||^2, mean over all evaluated rows
  double fvu = 0;                    // sum ||x - x_hat||^2 / total_variance
  double explained_variance = 0;     // 1 - fvu
  double cosine_similarity = 0;      // mean over rows with x != 0 of cos(x, x_hat) (0 when x_hat = 0)
  double l2_norm_in = 0, l2_norm_out = 0;  // mean ||x||, mean ||x_hat|| over all rows
  double l2_ratio = 0;                     // mean over rows with x != 0 of ||x_hat|| / ||x||
  double relative_reconstruction_bias = 0;  // E||x_hat||^2 / E[x . x_hat]
  int64_t zero_input_rows = 0;             // rows with x = 0, left out of the two means above

  // Sparsity.
  double l0_mean = 0, l0_std = 0;  // active (non-zero) latents per row; std is the population std
  double l1_mean = 0;              // mean sum |f| per row
  std::vector<int64_t> l0_histogram;  // [d_sae + 1]: rows with L0 == i

  // Latents.
  std::vector<int64_t> fire_count;  // [d_sae]: rows on which latent j was non-zero
  int64_t dead = 0;                 // fire_count == 0
  int64_t dense = 0;                // fire_count / rows > kDenseThreshold

  // Firing frequency fire_count / rows per latent.
  std::vector<double> frequency() const;
  // SAELens sparsity.safetensors convention: log10(frequency + 1e-10).
  std::vector<float> log10_density() const;
  // L0 value at quantile q in [0, 1] (the smallest L0 with at least q of the rows at or below it).
  int64_t l0_quantile(double q) const;
};

// Accumulates the metrics over rows given in any number of calls.
class SaeEvaluator {
 public:
  // chunk_rows: rows encoded at once (0: sized so one chunk's latents take about 32 MB).
  explicit SaeEvaluator(const Sae& sae, int64_t chunk_rows = 0);
  // Encodes and reconstructs rows of x [rows, d_in] with Sae::reconstruct, in chunks, and
  // accumulates them.
  void add(const float* x, int64_t rows);
  // Accumulates rows whose latents [rows, d_sae] and reconstruction [rows, d_in] are given.
  void accumulate(const float* x, const float* latents, const float* x_hat, int64_t rows);
  int64_t rows() const { return n_; }
  int64_t chunk_rows() const { return chunk_; }
  EvalResult result() const;

 private:
  const Sae& sae_;
  int64_t chunk_;
  int64_t n_ = 0;
  std::vector<double> shift_;  // per-dimension shift K (mean of the first rows seen) for the variance
  std::vector<double> sum_x_;  // sum (x - K) per dimension
  double sum_xx_ = 0;          // sum ||x - K||^2
  double sum_se_ = 0, sum_xh2_ = 0, sum_dot_ = 0, sum_cos_ = 0, sum_ratio_ = 0, sum_nin_ = 0, sum_nout_ = 0;
  double sum_l0_ = 0, sum_l0sq_ = 0, sum_l1_ = 0;
  int64_t n_nonzero_ = 0;
  std::vector<int64_t> fire_, l0_hist_;
  std::vector<float> lat_buf_, xhat_buf_;  // one chunk
};

// For each row i of A [na, d]: the largest cosine similarity between A_i and a row of B [nb, d],
// leaving out B_i when exclude_same_index (A and B the same matrix). Rows are normalised, then
// A Bᵀ is formed in blocks of rows with the backend's sgemm, so memory is O(block * nb), never
// O(na * nb). A zero row of B is never a candidate; a zero row of A (or no candidate) gives NaN.
std::vector<float> max_cosine(const float* A, int64_t na, const float* B, int64_t nb, int64_t d,
                              bool exclude_same_index, Backend& be, int64_t block_rows = 0);
// Both directions from one blocked pass over A Bᵀ: a_to_b [na] as max_cosine(A, B) and b_to_a [nb]
// as max_cosine(B, A) (the column maxima of the same products).
void max_cosine_both_ways(const float* A, int64_t na, const float* B, int64_t nb, int64_t d, Backend& be,
                          std::vector<float>& a_to_b, std::vector<float>& b_to_a, int64_t block_rows = 0);

// Summary of a set of values, NaN ones left out (count says how many were used).
struct Summary {
  int64_t count = 0;
  double mean = 0, min = 0, p10 = 0, median = 0, p90 = 0, p99 = 0, max = 0;
};
Summary summarize(const std::vector<float>& v);

// Decoder geometry of one SAE and the comparison of two.
struct GeometryResult {
  std::vector<float> max_cos;  // [d_sae]
  Summary summary;
  int64_t zero_rows = 0;       // decoder rows of norm 0 (NaN in max_cos)
  int64_t above_threshold = 0;  // rows whose max cosine exceeds kMatchThreshold
};
GeometryResult decoder_geometry(const Sae& sae, Backend& be);

struct CompareResult {
  int64_t d_sae_other = 0;
  Summary a_to_b, b_to_a;              // max cosine of each row of one SAE's decoder with the other's
  double matched_a_to_b = 0, matched_b_to_a = 0;  // fraction of rows with max cosine > kMatchThreshold
};
// Both decoders must have the same d_in (InputError naming `where` otherwise).
CompareResult compare_decoders(const Sae& a, const Sae& b, Backend& be, const std::string& where);

// Everything sae-eval reports.
struct EvalReport {
  std::string sae_path, compare_path;
  std::vector<std::string> inputs;
  const Sae* sae = nullptr;
  EvalResult eval;
  bool has_geometry = false;
  GeometryResult geometry;
  bool has_compare = false;
  CompareResult compare;
};

// The JSON report (key names documented in docs/eval.md; non-finite numbers become null).
nlohmann::ordered_json eval_report_json(const EvalReport& r);
// A short human-readable table.
std::string eval_report_table(const EvalReport& r);
// The plots as file name -> SVG text: freq_hist.svg, l0_hist.svg and, with geometry,
// decoder_cos_hist.svg.
std::map<std::string, std::string> eval_report_plots(const EvalReport& r);

}  // namespace sae
