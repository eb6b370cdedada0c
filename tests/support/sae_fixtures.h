// Test fixtures for SAE directories (SAELens 6.x, SAELens legacy, EleutherAI sparsify) written
// with SafeTensorsWriter and a cfg.json string, and an independent double-precision reference of
// each format's forward pass, written from the formats' definitions (SAELens's encode/decode and
// run-time normalisation, sparsify's topk(relu(...))), not from lib/sae/sae.cpp.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "base/files.h"
#include "stream/safetensors.h"

namespace fixtures {

namespace fs = std::filesystem;
using json = nlohmann::json;

using sae::TempDir;  // a fresh directory removed at the end of the test (lib/base/files.h)

inline void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

inline std::vector<float> uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// The parameters of an SAE as the file formats store them (SAELens layout: W_enc [d_in, d_sae],
// W_dec [d_sae, d_in]) and the options that change how the forward pass reads them.
struct Weights {
  std::string arch = "standard";
  int64_t d_in = 0, d_sae = 0;
  int k = 0;
  std::vector<float> W_enc, b_enc, W_dec, b_dec, threshold, b_gate, r_mag, b_mag;
  std::vector<float> scaling;  // legacy finetuning scaling_factor (empty: none)
  bool apply_b_dec = true;
  std::string norm = "none";
  bool rescale_by_decoder_norm = false;  // SAELens TopK option
};

// The hand fixture of docs/eval.md: d_in 2, d_sae 3; latents 0 and 1 are ReLU copies of the two
// coordinates, latent 2 never fires (zero encoder column, bias -1); decoder rows e1, e2 and
// (1, 1)/sqrt 2.
inline Weights hand_weights() {
  Weights w;
  w.arch = "standard";
  w.d_in = 2;
  w.d_sae = 3;
  w.W_enc = {1, 0, 0, 0, 1, 0};
  w.b_enc = {0, 0, -1};
  const float h = float(1 / std::sqrt(2.0));
  w.W_dec = {1, 0, 0, 1, h, h};
  w.b_dec = {0, 0};
  return w;
}

// Random weights for an architecture. Biases are spread so that some latents fire and some do not.
inline Weights random_weights(const std::string& arch, int64_t d_in, int64_t d_sae, uint32_t seed, int k = 0) {
  Weights w;
  w.arch = arch;
  w.d_in = d_in;
  w.d_sae = d_sae;
  w.k = k;
  w.W_enc = randn(size_t(d_in * d_sae), seed, 1.0f / std::sqrt(float(d_in)));
  w.W_dec = randn(size_t(d_sae * d_in), seed + 1, 1.0f / std::sqrt(float(d_in)));
  w.b_dec = randn(size_t(d_in), seed + 2, 0.3f);
  if (arch == "gated") {
    w.b_gate = uniform(size_t(d_sae), seed + 3, -0.6f, 0.3f);
    w.r_mag = uniform(size_t(d_sae), seed + 4, -0.5f, 0.5f);
    w.b_mag = uniform(size_t(d_sae), seed + 5, -0.3f, 0.3f);
  } else {
    w.b_enc = uniform(size_t(d_sae), seed + 3, -0.6f, 0.3f);
  }
  if (arch == "jumprelu") w.threshold = uniform(size_t(d_sae), seed + 6, 0.0f, 0.5f);
  return w;
}

// SafeTensors file of a SAELens-layout SAE.
inline void write_saelens_weights(const std::string& path, const Weights& w) {
  fs::create_directories(fs::path(path).parent_path());
  sae::SafeTensorsWriter st;
  st.add("W_enc", {w.d_in, w.d_sae}, w.W_enc.data());
  st.add("W_dec", {w.d_sae, w.d_in}, w.W_dec.data());
  st.add("b_dec", {w.d_in}, w.b_dec.data());
  if (w.arch == "gated") {
    st.add("b_gate", {w.d_sae}, w.b_gate.data());
    st.add("r_mag", {w.d_sae}, w.r_mag.data());
    st.add("b_mag", {w.d_sae}, w.b_mag.data());
  } else {
    st.add("b_enc", {w.d_sae}, w.b_enc.data());
  }
  if (w.arch == "jumprelu") st.add("threshold", {w.d_sae}, w.threshold.data());
  if (!w.scaling.empty()) st.add("scaling_factor", {w.d_sae}, w.scaling.data());
  st.write(path);
}

// SAELens 6.x directory: architecture fields at the top, metadata under "metadata".
inline void write_saelens6(const std::string& dir, const Weights& w, json extra = json::object()) {
  json cfg = {{"architecture", w.arch},
              {"d_in", w.d_in},
              {"d_sae", w.d_sae},
              {"dtype", "float32"},
              {"device", "cpu"},
              {"apply_b_dec_to_input", w.apply_b_dec},
              {"normalize_activations", w.norm},
              {"reshape_activations", "none"},
              {"metadata",
               {{"sae_lens_version", "6.5.0"},
                {"sae_lens_training_version", "6.5.0"},
                {"model_name", "gpt2"},
                {"hook_name", "blocks.3.hook_resid_post"},
                {"hook_layer", 3},
                {"context_size", 128}}}};
  if (w.arch == "topk") cfg["k"] = w.k;
  if (w.rescale_by_decoder_norm) cfg["rescale_acts_by_decoder_norm"] = true;
  for (auto it = extra.begin(); it != extra.end(); ++it) cfg[it.key()] = it.value();
  write_text(dir + "/cfg.json", cfg.dump(2));
  write_saelens_weights(dir + "/sae_weights.safetensors", w);
}

// SAELens before 6.0: everything at the top level, legacy key spellings, boolean normalisation,
// the TopK k inside activation_fn_kwargs.
inline void write_saelens_legacy(const std::string& dir, const Weights& w, json extra = json::object()) {
  json cfg = {{"architecture", w.arch == "topk" ? "standard" : w.arch},
              {"d_in", w.d_in},
              {"d_sae", w.d_sae},
              {"dtype", "float32"},
              {"device", "cpu"},
              {"model_name", "gpt2-small"},
              {"hook_point", "blocks.8.hook_resid_pre"},
              {"hook_point_layer", 8},
              {"hook_point_head_index", nullptr},
              {"activation_fn_str", w.arch == "topk" ? "topk" : "relu"},
              {"apply_b_dec_to_input", w.apply_b_dec},
              {"finetuning_scaling_factor", !w.scaling.empty()},
              {"sae_lens_training_version", "3.5.0"},
              {"prepend_bos", true},
              {"dataset_path", "Skylion007/openwebtext"},
              {"context_size", 128},
              {"normalize_activations", false}};
  if (w.arch == "topk") cfg["activation_fn_kwargs"] = {{"k", w.k}};
  for (auto it = extra.begin(); it != extra.end(); ++it) cfg[it.key()] = it.value();
  write_text(dir + "/cfg.json", cfg.dump(2));
  write_saelens_weights(dir + "/sae_weights.safetensors", w);
}

// EleutherAI sparsify: encoder.weight [M, d] (the transpose of SAELens's W_enc), encoder.bias,
// W_dec [M, d], b_dec; cfg.json is the SparseCoderConfig plus d_in. Always TopK.
inline void write_sparsify(const std::string& dir, const Weights& w, json extra = json::object()) {
  std::vector<float> enc(size_t(w.d_sae * w.d_in));
  for (int64_t m = 0; m < w.d_sae; m++)
    for (int64_t j = 0; j < w.d_in; j++) enc[size_t(m * w.d_in + j)] = w.W_enc[size_t(j * w.d_sae + m)];
  fs::create_directories(dir);
  sae::SafeTensorsWriter st;
  st.add("encoder.weight", {w.d_sae, w.d_in}, enc.data(), sae::DType::bf16);
  st.add("encoder.bias", {w.d_sae}, w.b_enc.data(), sae::DType::bf16);
  st.add("W_dec", {w.d_sae, w.d_in}, w.W_dec.data(), sae::DType::bf16);
  st.add("b_dec", {w.d_in}, w.b_dec.data(), sae::DType::bf16);
  st.write(dir + "/sae.safetensors");
  json cfg = {{"activation", "topk"},  {"expansion_factor", 32}, {"normalize_decoder", true},
              {"num_latents", w.d_sae}, {"k", w.k},               {"multi_topk", false},
              {"skip_connection", false}, {"transcode", false},   {"d_in", w.d_in}};
  for (auto it = extra.begin(); it != extra.end(); ++it) cfg[it.key()] = it.value();
  write_text(dir + "/cfg.json", cfg.dump());
}

// Rounds weights to what a bf16 file holds (the sparsify fixture stores bf16, as sparsify does).
inline Weights bf16_rounded(Weights w) {
  for (auto* v : {&w.W_enc, &w.b_enc, &w.W_dec, &w.b_dec})
    for (float& x : *v) x = sae::bf16_to_f32(sae::f32_to_bf16(x));
  return w;
}

// ---- reference forward pass (double precision, straight from the format definitions) ----

struct RefOut {
  std::vector<double> f;     // [rows, d_sae]
  std::vector<double> xhat;  // [rows, d_in]
};

// SAELens SAE.forward for the four inference architectures (and pre-6 finetuning scale), with
// its run-time normalisation: constant_norm_rescale multiplies by sqrt(d_in)/||x|| and divides the
// output by it; layer_norm subtracts the mean, divides by (unbiased std + 1e-5), and maps the output
// back with * std + mean.
inline RefOut ref_saelens(const Weights& w, const float* x, int64_t rows) {
  RefOut o;
  const int64_t D = w.d_in, M = w.d_sae;
  o.f.assign(size_t(rows * M), 0.0);
  o.xhat.assign(size_t(rows * D), 0.0);
  std::vector<double> dec_norm(size_t(M), 1.0);
  if (w.rescale_by_decoder_norm)
    for (int64_t m = 0; m < M; m++) {
      double s = 0;
      for (int64_t i = 0; i < D; i++) s += double(w.W_dec[size_t(m * D + i)]) * w.W_dec[size_t(m * D + i)];
      dec_norm[size_t(m)] = std::sqrt(s);
    }
  for (int64_t r = 0; r < rows; r++) {
    std::vector<double> xin(x + r * D, x + (r + 1) * D);
    double coeff = 1, mu = 0, sd = 0;
    if (w.norm == "constant_norm_rescale") {
      double s = 0;
      for (double v : xin) s += v * v;
      coeff = std::sqrt(double(D)) / std::sqrt(s);
      for (double& v : xin) v *= coeff;
    } else if (w.norm == "layer_norm") {
      for (double v : xin) mu += v;
      mu /= double(D);
      double var = 0;
      for (double v : xin) var += (v - mu) * (v - mu);
      sd = std::sqrt(var / double(D - 1));
      for (double& v : xin) v = (v - mu) / (sd + 1e-5);
    }
    if (w.apply_b_dec)
      for (int64_t i = 0; i < D; i++) xin[size_t(i)] -= w.b_dec[size_t(i)];
    std::vector<double> h(static_cast<size_t>(M));
    std::vector<double> hw(size_t(M), 0.0);  // x @ W_enc without bias
    for (int64_t m = 0; m < M; m++)
      for (int64_t i = 0; i < D; i++) hw[size_t(m)] += xin[size_t(i)] * w.W_enc[size_t(i * M + m)];
    double* f = o.f.data() + r * M;
    if (w.arch == "gated") {
      for (int64_t m = 0; m < M; m++) {
        double gate = hw[size_t(m)] + w.b_gate[size_t(m)];
        double mag = hw[size_t(m)] * std::exp(double(w.r_mag[size_t(m)])) + w.b_mag[size_t(m)];
        f[m] = gate > 0 ? std::max(mag, 0.0) : 0.0;
      }
    } else {
      for (int64_t m = 0; m < M; m++) h[size_t(m)] = hw[size_t(m)] + w.b_enc[size_t(m)];
      if (w.arch == "standard") {
        for (int64_t m = 0; m < M; m++) f[m] = std::max(h[size_t(m)], 0.0);
      } else if (w.arch == "jumprelu") {
        for (int64_t m = 0; m < M; m++) f[m] = h[size_t(m)] > w.threshold[size_t(m)] ? std::max(h[size_t(m)], 0.0) : 0.0;
      } else if (w.arch == "topk") {
        for (int64_t m = 0; m < M; m++) h[size_t(m)] *= dec_norm[size_t(m)];
        std::vector<int64_t> idx(static_cast<size_t>(M));
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return h[size_t(a)] > h[size_t(b)]; });
        for (int i = 0; i < w.k; i++) f[idx[size_t(i)]] = std::max(h[size_t(idx[size_t(i)])], 0.0);
      }
    }
    double* xh = o.xhat.data() + r * D;
    for (int64_t i = 0; i < D; i++) xh[i] = w.b_dec[size_t(i)];
    for (int64_t m = 0; m < M; m++) {
      double a = f[m] / dec_norm[size_t(m)];
      if (!w.scaling.empty()) a *= w.scaling[size_t(m)];
      if (a == 0) continue;
      for (int64_t i = 0; i < D; i++) xh[i] += a * w.W_dec[size_t(m * D + i)];
    }
    if (w.norm == "constant_norm_rescale")
      for (int64_t i = 0; i < D; i++) xh[i] /= coeff;
    if (w.norm == "layer_norm")
      for (int64_t i = 0; i < D; i++) xh[i] = xh[i] * sd + mu;
  }
  return o;
}

// sparsify SparseCoder: top-k of relu((x - b_dec) @ encoder.weight^T + encoder.bias), decoded as
// the sum of the selected W_dec rows plus b_dec. enc is [d_sae, d_in] as sparsify stores it.
inline RefOut ref_sparsify(const std::vector<float>& enc, const std::vector<float>& bias, const std::vector<float>& W_dec,
                           const std::vector<float>& b_dec, int64_t D, int64_t M, int k, const float* x, int64_t rows) {
  RefOut o;
  o.f.assign(size_t(rows * M), 0.0);
  o.xhat.assign(size_t(rows * D), 0.0);
  for (int64_t r = 0; r < rows; r++) {
    std::vector<double> pre(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; m++) {
      double s = bias[size_t(m)];
      for (int64_t i = 0; i < D; i++) s += (double(x[r * D + i]) - b_dec[size_t(i)]) * enc[size_t(m * D + i)];
      pre[size_t(m)] = std::max(s, 0.0);
    }
    std::vector<int64_t> idx(static_cast<size_t>(M));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return pre[size_t(a)] > pre[size_t(b)]; });
    for (int i = 0; i < k; i++) o.f[size_t(r * M + idx[size_t(i)])] = pre[size_t(idx[size_t(i)])];
    for (int64_t i = 0; i < D; i++) {
      double s = b_dec[size_t(i)];
      for (int j = 0; j < k; j++) s += pre[size_t(idx[size_t(j)])] * W_dec[size_t(idx[size_t(j)] * D + i)];
      o.xhat[size_t(r * D + i)] = s;
    }
  }
  return o;
}

// Checks float results against a double reference, row by row. Float32 dot products of at most a
// few hundred O(1) terms carry a relative error of about n * 2^-24 of the sum of |terms|; the
// tolerance is 2e-5 of the row's scale (its largest reference magnitude, at least 1), which
// covers that with margin while still catching any wrong term.
inline void expect_rows_near(const float* got, const std::vector<double>& ref, int64_t rows, int64_t cols,
                             const std::string& what, double rel = 2e-5) {
  for (int64_t r = 0; r < rows; r++) {
    double scale = 1;
    for (int64_t c = 0; c < cols; c++) scale = std::max(scale, std::fabs(ref[size_t(r * cols + c)]));
    for (int64_t c = 0; c < cols; c++) {
      double g = got[r * cols + c], e = ref[size_t(r * cols + c)];
      if (std::fabs(g - e) > rel * scale) {
        ADD_FAILURE() << what << " row " << r << " col " << c << ": got " << g << ", reference " << e;
        return;
      }
    }
  }
}

}  // namespace fixtures
