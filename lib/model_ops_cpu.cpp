// CPU transformer ops: OpenMP loops over rows (and over batch x head for attention) calling the
// shared per-element functions of lib/kernels/transformer_kernels.h. Every loop's inner dimension
// is contiguous so the compiler vectorises it (exp_f32 is written for that).
#include <omp.h>

#include <cstring>
#include <vector>

#include "model_ops.h"

// OpenBLAS's thread count, when the BLAS is OpenBLAS (weak: absent elsewhere).
extern "C" {
__attribute__((weak)) void openblas_set_num_threads(int);
__attribute__((weak)) int openblas_get_num_threads(void);
}

namespace sae {

namespace {

class CpuTransformerOps final : public TransformerOps {
 public:
  // One pool of threads for the whole pass: the OpenMP threads that run the element-wise ops
  // also run the products, each on its share of the rows with a single-threaded sgemm.
  // Alternating between OpenMP's pool and OpenBLAS's own threads leaves one pool spinning while
  // the other works, which on a 2-core machine costs a fifth of the time.
  void project(Backend& be, bool trans_w, int64_t rows, int64_t out, int64_t in, const float* x, const float* w,
               float* y) override {
    const int threads = omp_get_max_threads();
    if (!openblas_set_num_threads || !openblas_get_num_threads || threads < 2 || rows < 2 * threads) {
      TransformerOps::project(be, trans_w, rows, out, in, x, w, y);
      return;
    }
    const int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel num_threads(threads)
    {
      const int n = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t r0 = rows * id / n, r1 = rows * (id + 1) / n;
      if (r1 > r0)
        be.gemm(false, trans_w, r1 - r0, out, in, 1.0f, x + r0 * in, in, w, trans_w ? in : out, 0.0f, y + r0 * out, out);
    }
    openblas_set_num_threads(blas_threads);
  }

  void embed(const int32_t* tokens, int64_t rows, int64_t seq, const float* wte, const float* wpe, int64_t d,
             float* out) override {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* e = wte + int64_t(tokens[r]) * d;
      float* o = out + r * d;
      if (wpe) {
        const float* p = wpe + (r % seq) * d;
#pragma omp simd
        for (int64_t i = 0; i < d; i++) o[i] = e[i] + p[i];
      } else {
        std::memcpy(o, e, size_t(d) * sizeof(float));
      }
    }
  }

  void layernorm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t d,
                 float eps) override {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * d;
      float* yr = y + r * d;
      float mean = tk::partial_sum(xr, d, 0, 1) / float(d);
      float rstd = tk::layernorm_rstd(tk::partial_sq_dev(xr, d, mean, 0, 1), d, eps);
#pragma omp simd
      for (int64_t i = 0; i < d; i++) yr[i] = tk::layernorm_elem(xr[i], mean, rstd, w[i], b[i]);
    }
  }

  void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps) override {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * d;
      float* yr = y + r * d;
      float rstd = tk::rmsnorm_rstd(tk::partial_sum_sq(xr, d, 0, 1), d, eps);
#pragma omp simd
      for (int64_t i = 0; i < d; i++) yr[i] = tk::rmsnorm_elem(xr[i], rstd, w[i]);
    }
  }

  void add_bias(float* x, const float* b, int64_t rows, int64_t cols) override {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      float* xr = x + r * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; c++) xr[c] += b[c];
    }
  }

  void add(float* y, const float* x, int64_t n) override {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
  }

  void bias_act(float* x, const float* b, int64_t rows, int64_t cols, tk::Activation a) override {
    // One branch per activation outside the loops so each inner loop is a straight vector loop.
    switch (a) {
      case tk::Activation::gelu_tanh: rows_apply(x, b, rows, cols, [](float v) { return tk::gelu_tanh(v); }); break;
      case tk::Activation::gelu_erf: rows_apply(x, b, rows, cols, [](float v) { return tk::gelu_erf(v); }); break;
      case tk::Activation::relu: rows_apply(x, b, rows, cols, [](float v) { return tk::relu(v); }); break;
      case tk::Activation::silu: rows_apply(x, b, rows, cols, [](float v) { return tk::silu(v); }); break;
    }
  }

  void gated_act(const float* gu, float* out, int64_t rows, int64_t cols, tk::Activation a) override {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* g = gu + r * 2 * cols;
      const float* u = g + cols;
      float* o = out + r * cols;
      if (a == tk::Activation::silu) {
#pragma omp simd
        for (int64_t c = 0; c < cols; c++) o[c] = tk::gated(tk::Activation::silu, g[c], u[c]);
      } else {
        for (int64_t c = 0; c < cols; c++) o[c] = tk::gated(a, g[c], u[c]);
      }
    }
  }

  void rope(float* qkv, int64_t rows, int64_t seq, int n_heads, int n_kv, int dh, const float* cos,
            const float* sin) override {
    const int64_t width = int64_t(n_heads + 2 * n_kv) * dh;
    const int half = dh / 2;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* c = cos + (r % seq) * half;
      const float* s = sin + (r % seq) * half;
      for (int h = 0; h < n_heads + n_kv; h++) {  // query heads, then key heads
        float* x = qkv + r * width + int64_t(h) * dh;
#pragma omp simd
        for (int i = 0; i < half; i++) tk::rope_pair(x + i, x + i + half, c[i], s[i]);
      }
    }
  }

  void attention(const float* qkv, float* out, int64_t batch, int64_t seq, int n_heads, int n_kv, int dh,
                 float scale) override {
    const int64_t width = int64_t(n_heads + 2 * n_kv) * dh;
    const int64_t out_width = int64_t(n_heads) * dh;
    const int group = n_heads / n_kv;
#pragma omp parallel
    {
      // Per thread: this head's keys transposed to [dh][seq] so the scores of one query against
      // all keys are a contiguous vector loop, and the score row.
      std::vector<float> kt(size_t(dh) * size_t(seq)), s(static_cast<size_t>(seq));
#pragma omp for collapse(2) schedule(static)
      for (int64_t b = 0; b < batch; b++) {
        for (int h = 0; h < n_heads; h++) {
          const int kvh = h / group;
          const float* base = qkv + b * seq * width;
          const int64_t koff = int64_t(n_heads + kvh) * dh, voff = int64_t(n_heads + n_kv + kvh) * dh;
          for (int64_t j = 0; j < seq; j++)
            for (int d = 0; d < dh; d++) kt[size_t(d * seq + j)] = base[j * width + koff + d];
          for (int64_t t = 0; t < seq; t++) {
            const float* q = base + t * width + int64_t(h) * dh;
            const int64_t n = t + 1;
            float* sc = s.data();
            for (int64_t j = 0; j < n; j++) sc[j] = 0.0f;
            for (int d = 0; d < dh; d++) {
              const float qd = q[d] * scale;
              const float* kr = kt.data() + int64_t(d) * seq;
#pragma omp simd
              for (int64_t j = 0; j < n; j++) sc[j] += qd * kr[j];
            }
            float m = -INFINITY;
#pragma omp simd reduction(max : m)
            for (int64_t j = 0; j < n; j++) m = tk::max_f32(m, sc[j]);
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < n; j++) {
              sc[j] = tk::softmax_weight(sc[j], m);
              sum += sc[j];
            }
            const float inv = 1.0f / sum;
            float* o = out + (b * seq + t) * out_width + int64_t(h) * dh;
            for (int d = 0; d < dh; d++) o[d] = 0.0f;
            for (int64_t j = 0; j < n; j++) {
              const float p = sc[j] * inv;
              const float* v = base + j * width + voff;
#pragma omp simd
              for (int d = 0; d < dh; d++) o[d] += p * v[d];
            }
          }
        }
      }
    }
  }

  void log_softmax_nll(float* x, int64_t rows, int64_t vocab, const int32_t* target, float* nll,
                       bool log_probs) override {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      float* xr = x + r * vocab;
      float m = -INFINITY;
#pragma omp simd reduction(max : m)
      for (int64_t i = 0; i < vocab; i++) m = tk::max_f32(m, xr[i]);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < vocab; i++) sum += tk::softmax_weight(xr[i], m);
      const float lse = m + logf(sum);
      if (nll) nll[r] = target[r] >= 0 ? lse - xr[target[r]] : 0.0f;
      if (log_probs) {
#pragma omp simd
        for (int64_t i = 0; i < vocab; i++) xr[i] -= lse;
      }
    }
  }

 private:
  template <class F>
  static void rows_apply(float* x, const float* b, int64_t rows, int64_t cols, F f) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      float* xr = x + r * cols;
      if (b) {
#pragma omp simd
        for (int64_t c = 0; c < cols; c++) xr[c] = f(xr[c] + b[c]);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < cols; c++) xr[c] = f(xr[c]);
      }
    }
  }
};

}  // namespace

std::unique_ptr<TransformerOps> make_cpu_transformer_ops() { return std::make_unique<CpuTransformerOps>(); }

std::unique_ptr<TransformerOps> make_transformer_ops(Backend& be) {
#ifdef SAE_HAVE_CUDA
  if (be.device() == Device::cuda) return make_cuda_transformer_ops();
#endif
  (void)be;
  return make_cpu_transformer_ops();
}

}  // namespace sae
