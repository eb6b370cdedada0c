// The shared per-element functions (lib/model/kernels.h) against libm in double, and
// the CPU transformer ops against plain double loops on random inputs of awkward sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

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

// Causal grouped-query attention on 2 sequences of 37 tokens, 6 query heads sharing 2 key/value
// heads of width 20: against double loops, to 1e-5 of the output scale (f32 dot products of 20
// terms and softmax sums of up to 37 terms).
TEST(ModelKernels, CpuAttentionMatchesDoubleLoops) {
  const int64_t B = 2, T = 37;
  const int H = 6, KV = 2, dh = 20;
  const int64_t W = int64_t(H + 2 * KV) * dh;
  std::vector<float> qkv = rnd(size_t(B * T * W), 1), out(size_t(B * T * H * dh));
  const float scale = 0.3f;
  make_cpu_transformer_ops()->attention(qkv.data(), out.data(), B, T, H, KV, dh, scale);
  double worst = 0, big = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int h = 0; h < H; h++) {
        int kh = h / (H / KV);
        const float* q = &qkv[size_t((b * T + t) * W + h * dh)];
        std::vector<double> s(size_t(t + 1));
        double m = -1e300, sum = 0;
        for (int64_t j = 0; j <= t; j++) {
          const float* k = &qkv[size_t((b * T + j) * W + (H + kh) * dh)];
          double d = 0;
          for (int i = 0; i < dh; i++) d += double(q[i]) * k[i];
          s[size_t(j)] = d * scale;
          m = std::max(m, s[size_t(j)]);
        }
        for (auto& e : s) sum += (e = std::exp(e - m));
        for (int i = 0; i < dh; i++) {
          double o = 0;
          for (int64_t j = 0; j <= t; j++) o += s[size_t(j)] / sum * qkv[size_t((b * T + j) * W + (H + KV + kh) * dh + i)];
          worst = std::max(worst, std::fabs(o - out[size_t((b * T + t) * H * dh + h * dh + i)]));
          big = std::max(big, std::fabs(o));
        }
      }
  EXPECT_LE(worst / big, 1e-5);
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
  const int H = 3, KV = 1, dh = 8, T = 4;
  const int64_t Wd = (H + 2 * KV) * dh;
  std::vector<float> q = rnd(size_t(T * Wd), 6), q0 = q, cs(size_t(T * dh / 2)), sn(size_t(T * dh / 2));
  const double f[] = {1.0, 0.3, 0.05, 0.001};
  for (int t = 0; t < T; t++)
    for (int i = 0; i < dh / 2; i++) {
      cs[size_t(t * dh / 2 + i)] = float(std::cos(t * f[i]));
      sn[size_t(t * dh / 2 + i)] = float(std::sin(t * f[i]));
    }
  ops->rope(q.data(), T, T, H, KV, dh, cs.data(), sn.data());
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H + 2 * KV; h++)
      for (int i = 0; i < dh / 2; i++) {
        const size_t a = size_t(t * Wd + h * dh + i), c = a + dh / 2;
        double ang = t * f[i];
        bool rotated = h < H + KV;  // value heads are left alone
        double wa = rotated ? q0[a] * std::cos(ang) - q0[c] * std::sin(ang) : q0[a];
        double wc = rotated ? q0[c] * std::cos(ang) + q0[a] * std::sin(ang) : q0[c];
        EXPECT_NEAR(q[a], wa, 1e-6);
        EXPECT_NEAR(q[c], wc, 1e-6);
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
