// Per-element arithmetic of the transformer forward pass, written once as SAE_HD functions: the
// CPU backend calls them from OpenMP loops (lib/model/ops_cpu.cpp) and the CUDA backend from
// __global__ kernels (lib/model/ops_cuda.cu), so the CPU tests check the arithmetic the GPU
// runs. Row reductions take (start, step) so that a CPU loop (0, 1) and a CUDA thread block
// (threadIdx.x, blockDim.x) share the same body.
#pragma once
#include <cmath>
#include <cstdint>

#include "base/dtype.h"
#include "base/host_device.h"

namespace sae::tk {

// MLP activations. gelu_tanh is GPT-2's "gelu_new" (also "gelu_pytorch_tanh", "gelu_fast");
// gelu_erf is the exact "gelu"; silu gates the Llama family's SwiGLU.
enum class Activation : int { gelu_tanh, gelu_erf, relu, silu };

// 2^n as a float for n in [-126, 127], built from its exponent bits. A bit cast rather than
// memcpy: GCC does not vectorise loops whose body takes a local's address.
SAE_HD float pow2i(int32_t n) {
#if defined(__CUDA_ARCH__)
  return __int_as_float((n + 127) << 23);
#else
  return __builtin_bit_cast(float, uint32_t(n + 127) << 23);
#endif
}

// e^x in f32 to about 2 ulp (Cephes expf), written so that compilers vectorise it: libm's expf
// is a scalar call that GCC only vectorises under -ffast-math, and the CPU pass spends much of
// its non-GEMM time in GELU/SiLU/softmax exponentials. Below ln(FLT_MIN) it returns 0; above 88
// it returns e^88 (never Inf), which every caller here divides or adds into harmlessly.
SAE_HD float exp_f32(float x) {
  const float lo = -87.33654475f;  // ln(FLT_MIN): 2^n stays a normal number
  const float hi = 88.0f;
  // Clamped with comparisons: fminf/fmaxf are library calls to GCC (NaN rules), which stop
  // vectorisation. A NaN x stays NaN.
  float xc = x < lo ? lo : (x > hi ? hi : x);
  // n = round(x / ln 2) by adding and removing 1.5 * 2^23, which leaves the float's integer part
  // rounded to nearest (floorf would do, but GCC does not vectorise it under IEEE trapping rules).
  const float magic = 12582912.0f;
  float n = (xc * 1.44269504088896341f + magic) - magic;
  // r = x - n ln2 in two steps (ln2 split in a short exact part and the rest) to keep r exact.
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  float scale = pow2i(int32_t(n));
  return x < lo ? 0.0f : p * scale;
}

// GPT-2's tanh GELU: 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3). The identity
// 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)) avoids the cancellation of 1 + tanh(u) for negative x.
SAE_HD float gelu_tanh(float x) {
  float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return x / (1.0f + exp_f32(-2.0f * u));
}

// Exact GELU: 0.5 x erfc(-x / sqrt 2), the erfc form being accurate in the negative tail.
SAE_HD float gelu_erf(float x) { return 0.5f * x * erfcf(-x * 0.70710678118654752f); }

SAE_HD float silu(float x) { return x / (1.0f + exp_f32(-x)); }

SAE_HD float relu(float x) { return x > 0.0f ? x : 0.0f; }

SAE_HD float activate(Activation a, float x) {
  switch (a) {
    case Activation::gelu_tanh: return gelu_tanh(x);
    case Activation::gelu_erf: return gelu_erf(x);
    case Activation::relu: return relu(x);
    case Activation::silu: return silu(x);
  }
  return x;
}

// SwiGLU element: act(gate) * up.
SAE_HD float gated(Activation a, float gate, float up) { return activate(a, gate) * up; }

// max by comparison (fmaxf is a library call to GCC, which stops vectorisation); NaN in b is
// skipped here and shows up later, in the exponentials.
SAE_HD float max_f32(float a, float b) { return b > a ? b : a; }

// Strided partial reductions over a row of n values: element i is taken when i = start + k*step.
SAE_HD float partial_sum(const float* x, int64_t n, int64_t start, int64_t step) {
  float s = 0.0f;
  for (int64_t i = start; i < n; i += step) s += x[i];
  return s;
}
SAE_HD float partial_sq_dev(const float* x, int64_t n, float mean, int64_t start, int64_t step) {
  float s = 0.0f;
  for (int64_t i = start; i < n; i += step) {
    float d = x[i] - mean;
    s += d * d;
  }
  return s;
}
SAE_HD float partial_sum_sq(const float* x, int64_t n, int64_t start, int64_t step) {
  float s = 0.0f;
  for (int64_t i = start; i < n; i += step) s += x[i] * x[i];
  return s;
}
SAE_HD float partial_max(const float* x, int64_t n, int64_t start, int64_t step) {
  float m = -INFINITY;
  for (int64_t i = start; i < n; i += step) m = max_f32(m, x[i]);
  return m;
}
// Sum of e^(x[i] - max) over the taken elements (the softmax denominator).
SAE_HD float partial_sum_exp(const float* x, int64_t n, float max, int64_t start, int64_t step) {
  float s = 0.0f;
  for (int64_t i = start; i < n; i += step) s += exp_f32(x[i] - max);
  return s;
}

// LayerNorm (GPT-2): (x - mean) / sqrt(var + eps) * w + b, with the biased variance.
SAE_HD float layernorm_rstd(float sq_dev_sum, int64_t n, float eps) {
  return 1.0f / sqrtf(sq_dev_sum / float(n) + eps);
}
SAE_HD float layernorm_elem(float x, float mean, float rstd, float w, float b) { return (x - mean) * rstd * w + b; }

// RMSNorm (Llama): x / sqrt(mean(x^2) + eps) * w.
SAE_HD float rmsnorm_rstd(float sum_sq, int64_t n, float eps) { return 1.0f / sqrtf(sum_sq / float(n) + eps); }
SAE_HD float rmsnorm_elem(float x, float rstd, float w) { return x * rstd * w; }

// Rotary embedding, Hugging Face "rotate_half" layout: element i pairs with i + head_dim/2, and
// (x0, x1) turns by the angle whose cosine and sine are c and s.
SAE_HD void rope_pair(float* x0, float* x1, float c, float s) {
  float a = *x0, b = *x1;
  *x0 = a * c - b * s;
  *x1 = b * c + a * s;
}

// tanh in f32 to a few ulp, vectorisable (libm's tanhf is a scalar call): near 0 its odd Taylor
// series (|x| < 0.125: the first omitted term is below 2e-9 relative), elsewhere
// (1 - e^(-2|x|)) / (1 + e^(-2|x|)) with the sign restored, where the subtraction loses at most
// two bits. Saturates to +-1 for large |x|; NaN stays NaN.
SAE_HD float tanh_f32(float x) {
  const float a = x < 0.0f ? -x : x;
  const float x2 = x * x;
  const float series = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
  const float e = exp_f32(-2.0f * a);
  const float t = (1.0f - e) / (1.0f + e);
  const float big = x < 0.0f ? -t : t;
  return a < 0.125f ? series : big;
}

// Gemma 2's soft-capping of attention scores and logits: cap * tanh(x / cap).
SAE_HD float softcap(float x, float cap) { return cap * tanh_f32(x / cap); }

// The first key position a query at position t sees: 0, or with a sliding window of w keys
// (itself included: transformers masks key j when t - j >= w) t - w + 1.
SAE_HD int64_t window_first(int64_t t, int64_t window) { return window > 0 && t >= window ? t - window + 1 : 0; }

// The first key slot the query at slot p sees, its sequence's first real slot being `start`
// (left padding): max(start, window_first(p, window)); a pad slot's own query (p < start) sees
// only itself, so its output, which nothing uses, stays finite.
SAE_HD int64_t first_key(int64_t start, int64_t p, int64_t window) {
  const int64_t w = window_first(p, window);
  const int64_t lo = start > w ? start : w;
  return lo > p ? p : lo;
}

// Softmax weight of a score given the row maximum (the caller divides by the sum).
SAE_HD float softmax_weight(float score, float max) { return exp_f32(score - max); }

// bf16 compute (lib/model/model.h, Compute::bf16). GEMM inputs are rounded to bf16 by lib/base/dtype.h's
// f32_to_bf16 (round to nearest even) on both backends; weights are rounded by the same function
// on the host before they are uploaded. An embedding row is read from an f32 or a bf16 table
// through widen (exact), then added to the position's embedding in f32.
SAE_HD float widen(float x) { return x; }
SAE_HD float widen(uint16_t h) { return bf16_to_f32(h); }
// An embedding element: the table's value times Gemma's scale (1 elsewhere, exact), plus the
// position's embedding (GPT-2; 0 elsewhere).
template <class T>
SAE_HD float embed_elem(T e, float scale, float pos) { return widen(e) * scale + pos; }

}  // namespace sae::tk
