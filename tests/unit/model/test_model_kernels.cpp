// The shared per-element functions (lib/model/kernels.h) against libm in double, and
// the CPU transformer ops against plain double loops on random inputs of awkward sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "base/dtype.h"
#include "model/kernels.h"
#include "model/ops.h"

using namespace sae;

namespace {
std::vector<float> rnd(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
}  // namespace

// exp_f32 is within 3e-7 relative of the true value (f32 epsilon is 1.19e-7: about 2.5 ulp),
// over the whole range where e^x is a normal float.
TEST(ModelKernels, ExpF32AccuracyAndRange) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.000731) {
    double want = std::exp(double(float(x)));
    double got = tk::exp_f32(float(x));
    worst = std::max(worst, std::fabs(got - want) / want);
  }
  EXPECT_LE(worst, 3e-7);
  EXPECT_EQ(tk::exp_f32(0.0f), 1.0f);
  EXPECT_EQ(tk::exp_f32(-100.0f), 0.0f);
  EXPECT_EQ(tk::exp_f32(-INFINITY), 0.0f);
  EXPECT_TRUE(std::isfinite(tk::exp_f32(1000.0f)));
}

// Activations within 2e-6 of max(|f(x)|, 1e-3) of the double formula, including the negative
// tails where 1 + tanh would cancel. The bound is the conditioning of f32 arithmetic, not of
// exp_f32: GELU's relative sensitivity to the rounding of its f32 argument u is about |2u|, up to
// ~9 where |f| >= 1e-3, so f32 evaluation can promise ~1.1e-6 (the same formula with libm's expf
// measures 1.09e-6 at x = -3.38, exactly as ours does).
TEST(ModelKernels, ActivationsMatchDoubleFormulas) {
  double w_gelu = 0, w_erf = 0, w_silu = 0;
  for (double x = -30; x <= 30; x += 0.00123) {
    float xf = float(x);
    double xd = xf;
    double g = xd / (1 + std::exp(-2 * std::sqrt(2 / M_PI) * (xd + 0.044715 * xd * xd * xd)));
    double e = 0.5 * xd * std::erfc(-xd / std::sqrt(2.0));
    double s = xd / (1 + std::exp(-xd));
    w_gelu = std::max(w_gelu, std::fabs(tk::gelu_tanh(xf) - g) / std::max(std::fabs(g), 1e-3));
    w_erf = std::max(w_erf, std::fabs(tk::gelu_erf(xf) - e) / std::max(std::fabs(e), 1e-3));
    w_silu = std::max(w_silu, std::fabs(tk::silu(xf) - s) / std::max(std::fabs(s), 1e-3));
  }
  EXPECT_LE(w_gelu, 2e-6);
  EXPECT_LE(w_erf, 2e-6);
  EXPECT_LE(w_silu, 2e-6);
  EXPECT_EQ(tk::relu(-2.0f), 0.0f);
  EXPECT_EQ(tk::relu(3.0f), 3.0f);
}

// tanh_f32 (behind Gemma 2's soft-capping) within 4 ulp-sized steps of libm's tanh in double
// (relative 5e-7) over both its branches and the switch between them, and exact at 0 and in
// saturation.
TEST(ModelKernels, TanhF32AndSoftcapMatchDouble) {
  double worst = 0;
  for (double x = -12; x <= 12; x += 0.000917) {
    const float xf = float(x);
    const double want = std::tanh(double(xf));
    if (want != 0) worst = std::max(worst, std::fabs(tk::tanh_f32(xf) - want) / std::fabs(want));
  }
  for (double x = 1e-30; x < 1; x *= 1.37) {  // tiny arguments: the series keeps full precision
    const float xf = float(x);
    worst = std::max(worst, std::fabs(tk::tanh_f32(xf) - std::tanh(double(xf))) / std::tanh(double(xf)));
    worst = std::max(worst, std::fabs(tk::tanh_f32(-xf) + std::tanh(double(xf))) / std::tanh(double(xf)));
  }
  EXPECT_LE(worst, 5e-7);
  EXPECT_EQ(tk::tanh_f32(0.0f), 0.0f);
  EXPECT_EQ(tk::tanh_f32(100.0f), 1.0f);
  EXPECT_EQ(tk::tanh_f32(-100.0f), -1.0f);
  EXPECT_TRUE(std::isnan(tk::tanh_f32(NAN)));
  // The op over a vector: cap * tanh(x / cap), bounded by the cap.
  std::vector<float> x = rnd(1001, 11, 40.0f), y = x;
  make_cpu_transformer_ops()->softcap(y.data(), int64_t(y.size()), 30.0f);
  for (size_t i = 0; i < x.size(); i++) {
    const double want = 30.0 * std::tanh(double(x[i]) / 30.0);
    EXPECT_NEAR(y[i], want, 1e-6 * 30.0) << x[i];
    EXPECT_LE(std::fabs(y[i]), 30.0f);
  }
}

// Causal grouped-query attention on 2 sequences of 37 tokens, 6 query heads sharing 2 key/value
// heads of width 20, with and without Gemma's score soft-capping and sliding windows (5 keys,
// within one vector of 8 or 16 lanes; 19, across vectors; 37, the whole sequence; 100, more than
// it): against double loops, to 1e-5 of the output scale (f32 dot products of 20 terms and
// softmax sums of up to 37 terms).
namespace {
void check_attention(float softcap, int64_t window) {
  const int64_t B = 2, T = 37;
  const int H = 6, KV = 2, dh = 20;
  const int64_t W = int64_t(H + 2 * KV) * dh;
  std::vector<float> qkv = rnd(size_t(B * T * W), 1), out(size_t(B * T * H * dh));
  const float scale = 0.3f;
  make_cpu_transformer_ops()->attention(qkv.data(), out.data(), B, T, H, KV, dh, scale, softcap, window);
  double worst = 0, big = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int h = 0; h < H; h++) {
        int kh = h / (H / KV);
        const float* q = &qkv[size_t((b * T + t) * W + h * dh)];
        const int64_t lo = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
        std::vector<double> s(size_t(t + 1), 0.0);
        double m = -1e300, sum = 0;
        for (int64_t j = lo; j <= t; j++) {
          const float* k = &qkv[size_t((b * T + j) * W + (H + kh) * dh)];
          double d = 0;
          for (int i = 0; i < dh; i++) d += double(q[i]) * k[i];
          s[size_t(j)] = d * scale;
          if (softcap > 0) s[size_t(j)] = softcap * std::tanh(s[size_t(j)] / softcap);
          m = std::max(m, s[size_t(j)]);
        }
        for (int64_t j = lo; j <= t; j++) sum += (s[size_t(j)] = std::exp(s[size_t(j)] - m));
        for (int i = 0; i < dh; i++) {
          double o = 0;
          for (int64_t j = lo; j <= t; j++) o += s[size_t(j)] / sum * qkv[size_t((b * T + j) * W + (H + KV + kh) * dh + i)];
          worst = std::max(worst, std::fabs(o - out[size_t((b * T + t) * H * dh + h * dh + i)]));
          big = std::max(big, std::fabs(o));
        }
      }
  EXPECT_LE(worst / big, 1e-5) << "softcap " << softcap << ", window " << window;
}
}  // namespace

TEST(ModelKernels, CpuAttentionMatchesDoubleLoops) { check_attention(0.0f, 0); }

TEST(ModelKernels, CpuAttentionSoftcapAndSlidingWindowMatchDoubleLoops) {
  check_attention(0.5f, 0);  // scores of scale ~1.3 against a cap of 0.5: tanh far from linear
  for (int64_t w : {1, 5, 19, 37, 100}) check_attention(0.0f, w);
  check_attention(0.5f, 5);
}

// A window of 1 leaves each query only itself: the output is its own value row.
TEST(ModelKernels, CpuAttentionWindowOfOneIsTheValueRow) {
  const int64_t T = 9;
  const int H = 2, KV = 1, dh = 4;
  const int64_t W = int64_t(H + 2 * KV) * dh;
  std::vector<float> qkv = rnd(size_t(T * W), 12), out(size_t(T * H * dh));
  make_cpu_transformer_ops()->attention(qkv.data(), out.data(), 1, T, H, KV, dh, 1.0f, 0.0f, 1);
  for (int64_t t = 0; t < T; t++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < dh; i++) EXPECT_EQ(out[size_t(t * H * dh + h * dh + i)], qkv[size_t(t * W + (H + KV) * dh + i)]);
}

// The embedding times Gemma's scale, with and without position embeddings, from f32 and bf16
// tables: exactly widen(e) * scale + pos, each a single rounding of the exact value.
TEST(ModelKernels, CpuEmbedScalesTheTableRow) {
  auto ops = make_cpu_transformer_ops();
  const int64_t V = 7, D = 19, rows = 6;
  std::vector<float> wte = rnd(size_t(V * D), 13), wpe = rnd(size_t(3 * D), 14), out(size_t(rows * D));
  std::vector<uint16_t> wte_h(wte.size());
  for (size_t i = 0; i < wte.size(); i++) wte_h[i] = f32_to_bf16(wte[i]);
  const std::vector<int32_t> tok = {3, 0, 6, 6, 1, 2}, pos = {0, 1, 2, 0, 1, 2};
  const float scale = 7.9375f;
  for (int bf16 = 0; bf16 < 2; bf16++)
    for (int with_pos = 0; with_pos < 2; with_pos++) {
      if (bf16) ops->embed_bf16(tok.data(), pos.data(), rows, wte_h.data(), with_pos ? wpe.data() : nullptr, D, scale, out.data());
      else ops->embed(tok.data(), pos.data(), rows, wte.data(), with_pos ? wpe.data() : nullptr, D, scale, out.data());
      for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < D; i++) {
          const size_t e = size_t(tok[size_t(r)] * D + i);
          const double v = double(bf16 ? bf16_to_f32(wte_h[e]) : wte[e]) * scale +
                           (with_pos ? wpe[size_t(pos[size_t(r)] * D + i)] : 0.0);
          EXPECT_EQ(out[size_t(r * D + i)], float(v)) << "bf16 " << bf16 << " positions " << with_pos;
        }
    }
}

TEST(ModelKernels, CpuNormsSoftmaxAndRopeMatchDoubleLoops) {
  auto ops = make_cpu_transformer_ops();
  const int64_t R = 5, D = 771;
  std::vector<float> x = rnd(size_t(R * D), 2, 3.0f), w = rnd(size_t(D), 3), b = rnd(size_t(D), 4), y(size_t(R * D));
  for (auto& v : x) v += 1.5f;  // a mean far from zero tests the two-pass variance
  ops->layernorm(x.data(), w.data(), b.data(), y.data(), R, D, 1e-5f);
  std::vector<float> z(size_t(R * D));
  ops->rmsnorm(x.data(), w.data(), z.data(), R, D, 1e-6f);
  for (int64_t r = 0; r < R; r++) {
    double mean = 0, var = 0, ms = 0;
    for (int64_t i = 0; i < D; i++) mean += x[size_t(r * D + i)];
    mean /= double(D);
    for (int64_t i = 0; i < D; i++) {
      double d = x[size_t(r * D + i)] - mean;
      var += d * d;
      ms += double(x[size_t(r * D + i)]) * x[size_t(r * D + i)];
    }
    var /= double(D);
    ms /= double(D);
    for (int64_t i = 0; i < D; i++) {
      double ln = (x[size_t(r * D + i)] - mean) / std::sqrt(var + 1e-5) * w[size_t(i)] + b[size_t(i)];
      double rms = x[size_t(r * D + i)] / std::sqrt(ms + 1e-6) * w[size_t(i)];
      EXPECT_NEAR(y[size_t(r * D + i)], ln, 1e-5 * (1 + std::fabs(ln)));
      EXPECT_NEAR(z[size_t(r * D + i)], rms, 1e-5 * (1 + std::fabs(rms)));
    }
  }

  // log-softmax and NLL over a 1003-entry vocabulary with logits of scale 10.
  const int64_t V = 1003;
  std::vector<float> lg = rnd(size_t(R * V), 5, 10.0f), lp = lg, nll(static_cast<size_t>(R));
  std::vector<int32_t> tgt = {3, 1002, -1, 0, 500};
  ops->log_softmax_nll(lp.data(), R, V, tgt.data(), nll.data(), true);
  for (int64_t r = 0; r < R; r++) {
    double m = -1e300, s = 0;
    for (int64_t i = 0; i < V; i++) m = std::max(m, double(lg[size_t(r * V + i)]));
    for (int64_t i = 0; i < V; i++) s += std::exp(lg[size_t(r * V + i)] - m);
    double lse = m + std::log(s);
    for (int64_t i = 0; i < V; i++) EXPECT_NEAR(lp[size_t(r * V + i)], lg[size_t(r * V + i)] - lse, 1e-5 * (1 + std::fabs(lse)));
    if (tgt[size_t(r)] >= 0)
      EXPECT_NEAR(nll[size_t(r)], lse - lg[size_t(r * V + tgt[size_t(r)])], 1e-5 * (1 + std::fabs(lse)));
    else
      EXPECT_EQ(nll[size_t(r)], 0.0f);
  }

  // RoPE on 3 query and 1 key head of width 8 at positions 0..3: pairs (i, i + 4) turn by t*f_i.
  // Then GPT-NeoX's partial rotary: only the first 4 dimensions turn, pairs (i, i + 2), and the
  // last 4 pass through.
  const int H = 3, KV = 1, dh = 8, T = 4;
  const int64_t Wd = (H + 2 * KV) * dh;
  const double f[] = {1.0, 0.3, 0.05, 0.001};
  for (int rot : {dh, 4}) {
    std::vector<float> q = rnd(size_t(T * Wd), 6), q0 = q, cs(size_t(T * rot / 2)), sn(size_t(T * rot / 2));
    for (int t = 0; t < T; t++)
      for (int i = 0; i < rot / 2; i++) {
        cs[size_t(t * rot / 2 + i)] = float(std::cos(t * f[i]));
        sn[size_t(t * rot / 2 + i)] = float(std::sin(t * f[i]));
      }
    const std::vector<int32_t> positions = {0, 1, 2, 3};
    ops->rope(q.data(), positions.data(), T, H, KV, dh, rot, cs.data(), sn.data());
    for (int t = 0; t < T; t++)
      for (int h = 0; h < H + 2 * KV; h++) {
        const bool rotated = h < H + KV;  // value heads are left alone
        for (int i = 0; i < rot / 2; i++) {
          const size_t a = size_t(t * Wd + h * dh + i), c = a + size_t(rot / 2);
          double ang = t * f[i];
          double wa = rotated ? q0[a] * std::cos(ang) - q0[c] * std::sin(ang) : q0[a];
          double wc = rotated ? q0[c] * std::cos(ang) + q0[a] * std::sin(ang) : q0[c];
          EXPECT_NEAR(q[a], wa, 1e-6) << "rot " << rot;
          EXPECT_NEAR(q[c], wc, 1e-6) << "rot " << rot;
        }
        for (int i = rot; i < dh; i++) EXPECT_EQ(q[size_t(t * Wd + h * dh + i)], q0[size_t(t * Wd + h * dh + i)]) << "rot " << rot;
      }
  }
}

// Qwen3's per-head q/k RMSNorm on qkv rows [q (3 heads) | k (2 heads) | v (2 heads)] of head width
// 6: each query head scaled by wq, each key head by wk, each by its own RMS; v untouched.
TEST(ModelKernels, CpuQkRmsnormNormalisesEachQueryAndKeyHeadAlone) {
  auto ops = make_cpu_transformer_ops();
  const int H = 3, KV = 2, dh = 6;
  const int64_t R = 4, W = (H + 2 * KV) * dh;
  std::vector<float> qkv = rnd(size_t(R * W), 8, 2.0f), before = qkv, wq = rnd(size_t(dh), 9), wk = rnd(size_t(dh), 10);
  ops->qk_rmsnorm(qkv.data(), R, H, KV, dh, wq.data(), wk.data(), 1e-6f);
  for (int64_t r = 0; r < R; r++)
    for (int h = 0; h < H + 2 * KV; h++) {
      const float* x = &before[size_t(r * W + h * dh)];
      double ms = 0;
      for (int i = 0; i < dh; i++) ms += double(x[i]) * x[i];
      ms /= dh;
      for (int i = 0; i < dh; i++) {
        const float got = qkv[size_t(r * W + h * dh + i)];
        if (h >= H + KV) {
          EXPECT_EQ(got, x[i]) << "v head " << h << " changed";
        } else {
          const double want = x[i] / std::sqrt(ms + 1e-6) * (h < H ? wq : wk)[size_t(i)];
          EXPECT_NEAR(got, want, 1e-5 * (1 + std::fabs(want))) << "row " << r << " head " << h;
        }
      }
    }
}
