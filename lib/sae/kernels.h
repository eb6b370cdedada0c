// Per-element and per-row arithmetic of SAE training, written once as SAE_HD functions so that the
// CPU op set (lib/sae/ops_cpu.cpp, OpenMP loops) and the CUDA op set (lib/sae/ops_cuda.cu,
// __global__ kernels) run the very same expressions. Nothing here allocates or loops over a batch:
// the callers own the loops, these functions own the maths.
#pragma once
#include <cmath>
#include <cstdint>

#include "base/host_device.h"

namespace sae::kern {

// Matryoshka prefix groups: latent l belongs to the first group t with l < end[t]. Architectures
// without nested prefixes use one group ending at d_sae. Passed by value to kernels.
constexpr int kMaxGroups = 16;
struct Groups {
  int n = 1;
  int32_t end[kMaxGroups] = {0};
};

SAE_HD int group_of(const Groups& g, int32_t l) {
  int t = 0;
  while (t < g.n - 1 && l >= g.end[t]) t++;
  return t;
}

SAE_HD float relu(float x) { return x > 0.0f ? x : 0.0f; }

// Order-preserving map of a float to an unsigned key: a > b as floats iff key(a) > key(b) (no
// NaNs here: inputs are checked finite). Used by the top-k and batch-top-k radix selections.
SAE_HD uint32_t float_key(float f) {
  union {
    float f;
    uint32_t u;
  } c;
  c.f = f;
  return (c.u & 0x80000000u) ? ~c.u : (c.u | 0x80000000u);
}
SAE_HD float key_float(uint32_t k) {
  union {
    float f;
    uint32_t u;
  } c;
  c.u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  return c.f;
}

// Top-k order: larger value first, ties to the lower index (so selections are deterministic and
// match the reference encoder in lib/sae/sae.cpp).
SAE_HD bool topk_before(float va, int32_t a, float vb, int32_t b) { return va > vb || (va == vb && a < b); }

// ---- reconstruction error ----
// g = scale * (xhat - target); returns the squared difference for the row sum.
SAE_HD float recon_grad(float xhat, float target, float scale, float* g) {
  float e = xhat - target;
  *g = scale * e;
  return e * e;
}

// ---- ReLU SAE, L1 penalty weighted by the decoder row norm (Anthropic, April 2024) ----
// Penalty per row: sum_i f_i * ||d_i||. dpre = (df + coef * ||d_i||) * [pre > 0], coef = lambda/B.
SAE_HD float relu_dpre(float df, float f, float norm, float coef) { return f > 0.0f ? df + coef * norm : 0.0f; }

// ---- JumpReLU (Rajamanoharan et al. 2024) ----
// Rectangle kernel K(u) = 1 for |u| < 1/2, else 0.
SAE_HD float rect(float u) { return (u > -0.5f && u < 0.5f) ? 1.0f : 0.0f; }
SAE_HD float jumprelu(float z, float thr) { return z > thr ? z : 0.0f; }
// Coefficient of latent i's firing frequency p_i in the sparsity penalty, d(penalty)/d(p_i):
//   plain L0:                penalty = lambda * sum_i p_i               -> lambda
//   quadratic frequency (GDM progress update, 2025), scale s > 0:
//                            penalty = lambda * sum_i p_i (1 + p_i / s)  -> lambda (1 + 2 p_i / s)
// where sum_i p_i is the batch-mean L0.
SAE_HD float l0_coef(float p, float lambda, float freq_scale) {
  return freq_scale > 0.0f ? lambda * (1.0f + 2.0f * p / freq_scale) : lambda;
}
// Straight-through gradients of one pre-activation z against threshold thr (bandwidth eps):
//   JumpReLU(z) = z H(z - thr):  dz = H(z - thr) df;  dthr = -(thr/eps) K((z-thr)/eps) df
//   H(z - thr) in the L0 term:   dz = 0;             dthr = -(1/eps) K((z-thr)/eps) c
// with c = dPenalty/dH = l0_coef / B. Returns dz; *dthr receives the threshold contribution.
SAE_HD float jumprelu_grad(float z, float thr, float df, float inv_eps, float c, float* dthr) {
  float k = rect((z - thr) * inv_eps);
  *dthr = -(thr * inv_eps) * k * df - inv_eps * k * c;
  return z > thr ? df : 0.0f;
}
// Penalty value for a batch, from the firing counts: lambda * sum_i p_i (1 + p_i/s).
SAE_HD float l0_penalty_term(float p, float lambda, float freq_scale) {
  return freq_scale > 0.0f ? lambda * p * (1.0f + p / freq_scale) : lambda * p;
}

// ---- Gated SAE (Rajamanoharan et al. 2024) ----
// base = (x - b_dec) W_gate; pi_gate = base + b_gate; pi_mag = exp(r_mag) base + b_mag;
// f = [pi_gate > 0] relu(pi_mag); the sparsity and auxiliary terms use relu(pi_gate).
struct GatedFwd {
  float f, gate_relu;
};
SAE_HD GatedFwd gated_fwd(float base, float b_gate, float r_mag, float b_mag) {
  float pg = base + b_gate;
  float pm = expf(r_mag) * base + b_mag;
  GatedFwd o;
  o.f = pg > 0.0f ? relu(pm) : 0.0f;
  o.gate_relu = relu(pg);
  return o;
}
// df: gradient of the main loss against f; dgr: gradient of the auxiliary loss against relu(pi_gate);
// l1: sparsity coefficient / B. The Heaviside gate passes no gradient (as in the paper).
struct GatedBwd {
  float dbase, dpi_gate, dpi_mag, dr_mag;
};
SAE_HD GatedBwd gated_bwd(float base, float df, float dgr, float b_gate, float r_mag, float b_mag, float l1) {
  float pg = base + b_gate;
  float er = expf(r_mag);
  float pm = er * base + b_mag;
  GatedBwd o;
  o.dpi_mag = (pg > 0.0f && pm > 0.0f) ? df : 0.0f;
  o.dpi_gate = pg > 0.0f ? dgr + l1 : 0.0f;
  o.dr_mag = o.dpi_mag * er * base;
  o.dbase = o.dpi_gate + er * o.dpi_mag;
  return o;
}

// ---- Adam (Kingma & Ba), with the global-norm clipping factor folded into the gradient ----
struct AdamStep {
  float lr, beta1, beta2, eps;
  float bc1, bc2;  // 1 - beta^t
  float gscale;    // gradient clipping factor (1 when not clipping)
};
SAE_HD void adam_update(float* p, float g, float* m, float* v, const AdamStep& s) {
  g *= s.gscale;
  float mi = s.beta1 * *m + (1.0f - s.beta1) * g;
  float vi = s.beta2 * *v + (1.0f - s.beta2) * g * g;
  *m = mi;
  *v = vi;
  float mhat = mi / s.bc1;
  float vhat = vi / s.bc2;
  *p -= s.lr * mhat / (sqrtf(vhat) + s.eps);
}

// ---- inference encoding (sae/sparse_encode.h): the activation rules of Sae::encode ----
// Each returns the latent's value from its pre-activation, exactly as Sae::encode (lib/sae/sae.cpp)
// computes it; a latent is active when the value is > 0 (every rule gives +0 or a positive value
// for an inactive one, and nothing negative). Products are written with mul_rn so that nvcc does
// not contract them with the following add into an FMA (host code is built without contraction),
// which keeps the CPU and CUDA results bit for bit equal on equal pre-activations.
enum class EncodeRule : int { standard = 0, jumprelu = 1, gated = 2, topk = 3 };

SAE_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
// standard (ReLU), and TopK on the selected latents: max(pre, 0).
SAE_HD float encode_relu(float pre) { return pre > 0.0f ? pre : 0.0f; }
// JumpReLU as SAELens: relu(pre) * (pre > threshold).
SAE_HD float encode_jumprelu(float pre, float thr) { return (pre > thr && pre > 0.0f) ? pre : 0.0f; }
// Gated, from base = x @ W_enc: [base + b_gate > 0] * relu(base * exp(r_mag) + b_mag), with
// mag_scale = exp(r_mag) computed once on the host (so both sides use the same exp).
SAE_HD float encode_gated(float base, float b_gate, float mag_scale, float b_mag) {
  const float g = base + b_gate;
  const float m = mul_rn(base, mag_scale) + b_mag;
  return g > 0.0f ? (m > 0.0f ? m : 0.0f) : 0.0f;
}
// The rule of a threshold architecture (not topk) for latent l of a row. Parameters not used by
// the rule may be null.
SAE_HD float encode_rule(EncodeRule rule, float pre, int64_t l, const float* threshold, const float* b_gate,
                         const float* mag_scale, const float* b_mag) {
  switch (rule) {
    case EncodeRule::jumprelu: return encode_jumprelu(pre, threshold[l]);
    case EncodeRule::gated: return encode_gated(pre, b_gate[l], mag_scale[l], b_mag[l]);
    default: return encode_relu(pre);
  }
}

}  // namespace sae::kern
