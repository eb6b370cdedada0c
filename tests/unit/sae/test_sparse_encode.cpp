// SparseEncoder (lib/sae/sparse_encode.h) against Sae::encode. Where the products are exact in
// float32 (weights and rows on a coarse binary grid) the sparse rows must be exactly Sae::encode's
// nonzeros (same indices, bit-equal values, ascending per row), for every architecture and thread
// count, including TopK ties (the lower index wins) and JumpReLU / gated pre-activations exactly at
// their thresholds. Where they are not (run-time normalisation, bf16 weights), OpenBLAS may round
// the two encoders' products differently in the last bit: values must agree to 1e-5, and a latent
// may be active on one side only when its pre-activation is within 1e-4 of its decision boundary.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <functional>
#include <ostream>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "base/errors.h"
#include "sae/sae.h"
#include "sae/sparse_encode.h"
#include "stream/stream.h"
#include "support/sae_fixtures.h"

namespace {

using sae::Device;
using sae::Sae;
using sae::SparseEncoder;

Sae make_sae(const fixtures::Weights& w) {
  Sae s;
  s.arch = w.arch;
  s.d_in = w.d_in;
  s.d_sae = w.d_sae;
  s.k = w.k;
  s.W_enc = w.W_enc;
  s.b_enc = w.b_enc;
  s.W_dec = w.W_dec;
  s.b_dec = w.b_dec;
  s.threshold = w.threshold;
  s.b_gate = w.b_gate;
  s.r_mag = w.r_mag;
  s.b_mag = w.b_mag;
  s.apply_b_dec_to_input = w.apply_b_dec;
  s.normalize_activations = w.norm;
  s.validate("test SAE");
  return s;
}

struct Sparse {
  std::vector<uint32_t> count, index;
  std::vector<float> value;
};

// Sae::encode's dense latents, their nonzeros kept in index order.
Sparse reference(const Sae& s, const std::vector<float>& x, int64_t rows) {
  std::vector<float> f(size_t(rows * s.d_sae));
  s.encode(x.data(), rows, f.data());
  Sparse o;
  for (int64_t r = 0; r < rows; r++) {
    uint32_t c = 0;
    for (int64_t l = 0; l < s.d_sae; l++) {
      const float v = f[size_t(r * s.d_sae + l)];
      if (v != 0.0f) {
        o.index.push_back(uint32_t(l));
        o.value.push_back(v);
        c++;
      }
    }
    o.count.push_back(c);
  }
  return o;
}

Sparse encode(const Sae& s, Device dev, int threads, const std::vector<float>& x, int64_t rows) {
  SparseEncoder enc(s, dev, threads);
  Sparse o;
  o.count = {99};  // replaced, not appended to
  o.index = {7, 7};
  o.value = {1.0f};
  enc.encode(x.data(), rows, o.count, o.index, o.value);
  return o;
}

void expect_same(const Sparse& want, const Sparse& got, const std::string& what) {
  ASSERT_EQ(want.count.size(), got.count.size()) << what;
  ASSERT_EQ(want.index.size(), got.index.size()) << what;
  ASSERT_EQ(got.index.size(), got.value.size()) << what;
  size_t o = 0;
  for (size_t r = 0; r < want.count.size(); r++) {
    ASSERT_EQ(want.count[r], got.count[r]) << what << ": row " << r;
    for (uint32_t i = 0; i < want.count[r]; i++, o++) {
      ASSERT_EQ(want.index[o], got.index[o]) << what << ": row " << r << " entry " << i;
      // Bit for bit.
      uint32_t a, b;
      std::memcpy(&a, &want.value[o], 4);
      std::memcpy(&b, &got.value[o], 4);
      ASSERT_EQ(a, b) << what << ": row " << r << " latent " << want.index[o] << ": " << want.value[o] << " vs "
                      << got.value[o];
      if (i > 0) {
        ASSERT_LT(got.index[o - 1], got.index[o]) << what << ": row " << r << " not ascending";
      }
    }
  }
}

std::vector<float> rows_of(int64_t rows, int64_t d, uint32_t seed) { return fixtures::randn(size_t(rows * d), seed, 1.5f); }

// Values on a coarse binary grid: k * step for integers k in [lo, hi].
std::vector<float> grid(size_t n, uint32_t seed, int lo, int hi, float step) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = float(d(g)) * step;
  return v;
}

// Weights on the grid (x and b_dec multiples of 1/8, W_enc, biases and thresholds of 1/16): every
// product and sum of the encoder is exact in float32, so any summation order gives the same bits,
// ties and values exactly at a threshold are frequent, and the encoders must agree exactly.
fixtures::Weights on_grid(fixtures::Weights w, uint32_t seed) {
  w.W_enc = grid(w.W_enc.size(), seed, -16, 16, 1.0f / 16);
  w.b_dec = grid(w.b_dec.size(), seed + 1, -8, 8, 1.0f / 8);
  if (!w.b_enc.empty()) w.b_enc = grid(w.b_enc.size(), seed + 2, -32, 16, 1.0f / 16);
  if (!w.threshold.empty()) w.threshold = grid(w.threshold.size(), seed + 3, 0, 32, 1.0f / 16);
  if (!w.b_gate.empty()) w.b_gate = grid(w.b_gate.size(), seed + 4, -32, 16, 1.0f / 16);
  if (!w.b_mag.empty()) w.b_mag = grid(w.b_mag.size(), seed + 5, -16, 16, 1.0f / 16);
  return w;
}
std::vector<float> grid_rows(int64_t rows, int64_t d, uint32_t seed) { return grid(size_t(rows * d), seed, -16, 16, 1.0f / 8); }

// The latents' pre-activations in double, from the encoder's float input (Sae::encoder_input), and
// how far each is from the point where its latent would switch on or off: 0 for ReLU, the
// threshold for JumpReLU (and 0), the gate and the magnitude's 0 for gated, for TopK 0 and the
// midpoint between the row's k-th and (k+1)-th largest.
std::vector<double> margins(const Sae& s, const std::vector<float>& x, int64_t rows) {
  std::vector<float> xin(size_t(rows * s.d_in));
  s.encoder_input(x.data(), rows, xin.data());
  std::vector<double> m(size_t(rows * s.d_sae));
  std::vector<double> pre(size_t(s.d_sae));
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t l = 0; l < s.d_sae; l++) {
      double v = s.arch == "gated" ? 0.0 : s.b_enc[size_t(l)];
      for (int64_t i = 0; i < s.d_in; i++) v += double(xin[size_t(r * s.d_in + i)]) * s.W_enc[size_t(i * s.d_sae + l)];
      pre[size_t(l)] = v;
    }
    double mid = 0;
    if (s.arch == "topk" && s.k < s.d_sae) {
      std::vector<double> sorted = pre;
      std::sort(sorted.begin(), sorted.end(), std::greater<double>());
      mid = (sorted[size_t(s.k - 1)] + sorted[size_t(s.k)]) / 2;
    }
    for (int64_t l = 0; l < s.d_sae; l++) {
      const double v = pre[size_t(l)];
      double d = std::fabs(v);
      if (s.arch == "jumprelu") d = std::min(d, std::fabs(v - s.threshold[size_t(l)]));
      if (s.arch == "gated")
        d = std::min(std::fabs(v + s.b_gate[size_t(l)]),
                     std::fabs(v * std::exp(double(s.r_mag[size_t(l)])) + s.b_mag[size_t(l)]));
      if (s.arch == "topk" && s.k < s.d_sae) d = std::min(d, std::fabs(v - mid));
      m[size_t(r * s.d_sae + l)] = d;
    }
  }
  return m;
}

// want and got agree up to the products' rounding (see the top of this file).
void expect_close(const Sparse& want, const Sparse& got, const std::vector<double>& margin, int64_t d_sae,
                  const std::string& what) {
  ASSERT_EQ(want.count.size(), got.count.size()) << what;
  size_t a = 0, b = 0;
  for (size_t r = 0; r < want.count.size(); r++) {
    const size_t ae = a + want.count[r], be = b + got.count[r];
    for (size_t i = b + 1; i < be; i++) ASSERT_LT(got.index[i - 1], got.index[i]) << what << ": row " << r << " not ascending";
    while (a < ae || b < be) {
      const uint32_t la = a < ae ? want.index[a] : UINT32_MAX, lb = b < be ? got.index[b] : UINT32_MAX;
      if (la == lb) {
        ASSERT_NEAR(want.value[a], got.value[b], 1e-5 * std::max(1.0f, std::fabs(want.value[a])))
            << what << ": row " << r << " latent " << la;
        a++;
        b++;
      } else {
        const uint32_t l = std::min(la, lb);
        EXPECT_LT(margin[r * size_t(d_sae) + l], 1e-4)
            << what << ": row " << r << " latent " << l << " active only " << (la < lb ? "in Sae::encode" : "here");
        (la < lb ? a : b)++;
      }
    }
  }
}

struct Case {
  std::string arch, norm;
  bool apply_b_dec;
  int k;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.arch << " normalize " << c.norm << (c.apply_b_dec ? "" : " without b_dec") << " k " << c.k;
}

class SparseEncodeArch : public ::testing::TestWithParam<Case> {};

TEST_P(SparseEncodeArch, EqualsSaeEncodeNonzeros) {
  const Case c = GetParam();
  fixtures::Weights w = fixtures::random_weights(c.arch, 24, 300, 11, c.k);
  w.norm = c.norm;
  w.apply_b_dec = c.apply_b_dec;
  // Without run-time normalisation the products are exact on the grid; with it, not.
  const bool exact = c.norm == "none";
  const Sae s = make_sae(on_grid(w, 40));
  // 1 row; fewer rows than a block; three blocks (two on one thread with 2 threads), the last partial.
  const int64_t block = SparseEncoder(s, Device::cpu).block_rows();
  for (int64_t rows : {int64_t(1), int64_t(37), 2 * block + 52}) {
    const std::vector<float> x = grid_rows(rows, s.d_in, uint32_t(100 + rows));
    const Sparse want = reference(s, x, rows);
    size_t nnz = 0;
    for (uint32_t v : want.count) nnz += v;
    ASSERT_GT(nnz, 0u) << "a fixture where nothing fires tests nothing";
    const std::vector<double> m = exact ? std::vector<double>() : margins(s, x, rows);
    Sparse first;
    for (int threads : {1, 2, 3, 0}) {
      const std::string what = c.arch + " " + c.norm + " rows " + std::to_string(rows) + " threads " + std::to_string(threads);
      const Sparse got = encode(s, Device::cpu, threads, x, rows);
      if (exact) expect_same(want, got, what);
      else expect_close(want, got, m, s.d_sae, what);
      // Whatever the thread count, the same bits.
      if (threads == 1) first = got;
      else expect_same(first, got, what + " against 1 thread");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, SparseEncodeArch,
    ::testing::Values(Case{"standard", "none", true, 0}, Case{"standard", "none", false, 0},
                      Case{"standard", "layer_norm", true, 0}, Case{"standard", "constant_norm_rescale", true, 0},
                      Case{"jumprelu", "none", true, 0}, Case{"jumprelu", "layer_norm", false, 0},
                      Case{"gated", "none", true, 0}, Case{"gated", "constant_norm_rescale", true, 0},
                      Case{"topk", "none", true, 1}, Case{"topk", "none", true, 16}, Case{"topk", "layer_norm", true, 40},
                      Case{"topk", "none", false, 300}),
    [](const ::testing::TestParamInfo<Case>& i) {
      return i.param.arch + "_" + i.param.norm + (i.param.apply_b_dec ? "" : "_nobdec") + "_k" + std::to_string(i.param.k);
    });

// An SAE whose latents have zero encoder columns: their pre-activation is exactly their bias, so
// ties and thresholds can be placed exactly.
fixtures::Weights constant_latents(const std::string& arch, int64_t d_in, int64_t d_sae, int k) {
  fixtures::Weights w = on_grid(fixtures::random_weights(arch, d_in, d_sae, 5, k), 60);
  for (float& v : w.W_enc) v /= 64.0f;  // the others stay small (|x W| < 0.25), and exact
  for (float& v : w.b_dec) v = 0.0f;
  return w;
}
void make_constant(fixtures::Weights& w, int64_t l, float bias) {
  for (int64_t i = 0; i < w.d_in; i++) w.W_enc[size_t(i * w.d_sae + l)] = 0.0f;
  (w.arch == "gated" ? w.b_gate : w.b_enc)[size_t(l)] = bias;
}

TEST(SparseEncode, TopKTiesGoToTheLowerIndex) {
  fixtures::Weights w = constant_latents("topk", 8, 64, 4);
  for (int64_t l : {50, 9, 33, 12, 60, 41}) make_constant(w, l, 3.0f);  // six equal largest values
  for (float& v : w.b_enc) v = std::min(v, 0.25f);
  for (int64_t l : {50, 9, 33, 12, 60, 41}) w.b_enc[size_t(l)] = 3.0f;
  const Sae s = make_sae(w);
  const std::vector<float> x = grid_rows(20, 8, 3);
  const Sparse got = encode(s, Device::cpu, 2, x, 20);
  for (size_t r = 0; r < 20; r++) {
    ASSERT_EQ(got.count[r], 4u);
    EXPECT_EQ(got.index[r * 4 + 0], 9u);
    EXPECT_EQ(got.index[r * 4 + 1], 12u);
    EXPECT_EQ(got.index[r * 4 + 2], 33u);
    EXPECT_EQ(got.index[r * 4 + 3], 41u);
    for (int i = 0; i < 4; i++) EXPECT_EQ(got.value[r * 4 + size_t(i)], 3.0f);
  }
  expect_same(reference(s, x, 20), got, "topk ties");
}

TEST(SparseEncode, TopKKeepsOnlyPositiveSelections) {
  // k = 10 but only three latents are positive: the selected zeros and negatives are not active.
  fixtures::Weights w = constant_latents("topk", 8, 32, 10);
  for (int64_t l = 0; l < 32; l++) make_constant(w, l, l % 3 == 0 ? -1.0f : 0.0f);
  make_constant(w, 4, 0.5f);
  make_constant(w, 17, 2.0f);
  make_constant(w, 30, 0.5f);
  const Sae s = make_sae(w);
  const std::vector<float> x = grid_rows(3, 8, 4);
  const Sparse got = encode(s, Device::cpu, 1, x, 3);
  EXPECT_EQ(got.count, (std::vector<uint32_t>{3, 3, 3}));
  EXPECT_EQ(got.index, (std::vector<uint32_t>{4, 17, 30, 4, 17, 30, 4, 17, 30}));
  expect_same(reference(s, x, 3), got, "topk positives");
  // All negative: empty rows.
  for (int64_t l = 0; l < 32; l++) make_constant(w, l, -1.0f - float(l));
  const Sparse none = encode(make_sae(w), Device::cpu, 1, x, 3);
  EXPECT_EQ(none.count, (std::vector<uint32_t>{0, 0, 0}));
  EXPECT_TRUE(none.index.empty());
}

TEST(SparseEncode, JumpReLUAtExactlyTheThresholdDoesNotFire) {
  fixtures::Weights w = constant_latents("jumprelu", 8, 16, 0);
  make_constant(w, 2, 0.25f);  // pre == threshold: off
  w.threshold[2] = 0.25f;
  make_constant(w, 5, 0.25f);  // just above: on
  w.threshold[5] = std::nextafter(0.25f, 0.0f);
  make_constant(w, 7, -0.5f);  // above a negative threshold but negative: off (relu)
  w.threshold[7] = -1.0f;
  make_constant(w, 11, 0.0f);  // zero with a negative threshold: off
  w.threshold[11] = -1.0f;
  const Sae s = make_sae(w);
  const std::vector<float> x = grid_rows(40, 8, 6);
  const Sparse got = encode(s, Device::cpu, 2, x, 40);
  size_t o = 0;
  for (size_t r = 0; r < 40; r++) {
    bool has5 = false;
    for (uint32_t i = 0; i < got.count[r]; i++, o++) {
      EXPECT_NE(got.index[o], 2u);
      EXPECT_NE(got.index[o], 7u);
      EXPECT_NE(got.index[o], 11u);
      has5 |= got.index[o] == 5u;
    }
    EXPECT_TRUE(has5) << "row " << r;
  }
  expect_same(reference(s, x, 40), got, "jumprelu thresholds");
}

TEST(SparseEncode, GatedGateAtExactlyZeroDoesNotFire) {
  fixtures::Weights w = constant_latents("gated", 8, 16, 0);
  make_constant(w, 3, 0.0f);  // gate exactly 0: off, whatever the magnitude
  w.b_mag[3] = 1.0f;
  make_constant(w, 6, 0.5f);  // gate open, magnitude 0 * exp(r) + b_mag > 0: on with b_mag
  w.b_mag[6] = 0.75f;
  make_constant(w, 9, 0.5f);  // gate open, negative magnitude: off
  w.b_mag[9] = -0.75f;
  const Sae s = make_sae(w);
  const std::vector<float> x = grid_rows(30, 8, 7);
  const Sparse got = encode(s, Device::cpu, 2, x, 30);
  size_t o = 0;
  for (size_t r = 0; r < 30; r++) {
    bool has6 = false;
    for (uint32_t i = 0; i < got.count[r]; i++, o++) {
      EXPECT_NE(got.index[o], 3u);
      EXPECT_NE(got.index[o], 9u);
      if (got.index[o] == 6u) {
        has6 = true;
        EXPECT_EQ(got.value[o], 0.75f);
      }
    }
    EXPECT_TRUE(has6) << "row " << r;
  }
  expect_same(reference(s, x, 30), got, "gated gate");
}

TEST(SparseEncode, ZeroRowsGiveEmptyOutput) {
  const Sae s = make_sae(fixtures::random_weights("standard", 8, 16, 1));
  SparseEncoder enc(s, Device::cpu, 2);
  std::vector<uint32_t> count{1}, index{1};
  std::vector<float> value{1};
  enc.encode(nullptr, 0, count, index, value);
  EXPECT_TRUE(count.empty() && index.empty() && value.empty());
}

TEST(SparseEncode, OutputIsAValidLatentsBatch) {
  const Sae s = make_sae(fixtures::random_weights("topk", 16, 64, 2, 8));
  const std::vector<float> x = rows_of(50, 16, 8);
  sae::Batch b;
  b.rows = 50;
  SparseEncoder(s, Device::cpu).encode(x.data(), 50, b.count, b.index, b.value);
  sae::StreamHeader h = sae::make_header("latents", 64, sae::DType::f32);
  EXPECT_NO_THROW(sae::check_batch(h, b, "test"));
  for (uint32_t c : b.count) EXPECT_EQ(c, 8u);  // random pre-activations: the 8 largest are positive here
}

// The directory formats load_sae reads (SAELens 6, SAELens legacy, sparsify): loaded, then encoded.
TEST(SparseEncode, EveryDirectoryFormat) {
  fixtures::TempDir tmp;
  const fixtures::Weights topk = fixtures::random_weights("topk", 16, 96, 21, 12);
  fixtures::write_saelens6(tmp.path() + "/s6", fixtures::random_weights("jumprelu", 16, 96, 22));
  fixtures::write_saelens_legacy(tmp.path() + "/legacy", fixtures::random_weights("standard", 16, 96, 23));
  fixtures::write_sparsify(tmp.path() + "/sparsify", topk);
  fixtures::Weights g = fixtures::random_weights("gated", 16, 96, 24);
  fixtures::write_saelens6(tmp.path() + "/gated", g);
  for (const char* dir : {"s6", "legacy", "sparsify", "gated"}) {
    const Sae s = sae::load_sae(tmp.path() + "/" + dir);
    const std::vector<float> x = rows_of(700, 16, 9);
    expect_close(reference(s, x, 700), encode(s, Device::cpu, 2, x, 700), margins(s, x, 700), s.d_sae, dir);
  }
}

// The CUDA encoder against the CPU one on grid inputs: bit for bit (the GPU self-test,
// sae-selftest --device cuda, checks the same).
TEST(SparseEncode, CudaMatchesCpu) {
  if (!sae::cuda_compiled() || sae::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (const char* arch : {"standard", "jumprelu", "gated", "topk"}) {
    const Sae s = make_sae(on_grid(fixtures::random_weights(arch, 32, 512, 31, 16), 50));
    const std::vector<float> x = grid_rows(700, 32, 7);
    const Sparse cpu = encode(s, Device::cpu, 0, x, 700);
    expect_same(cpu, encode(s, Device::cuda, 0, x, 700), std::string(arch) + " on CUDA");
    expect_same(reference(s, x, 700), cpu, std::string(arch) + " on the CPU");
  }
}

}  // namespace
