// CPU transformer ops: loops over rows (and over batch x head for attention) split among the
// threads of ForkJoinPool::global() (base/fork_join_pool.h says why not OpenMP's parallel for), calling
// the shared per-element functions of lib/model/kernels.h. Every inner loop runs
// over a contiguous dimension under `omp simd`, so the compiler vectorises it (exp_f32 is written
// for that).
#include <algorithm>
#include <cstring>
#include <vector>

#include "base/fork_join_pool.h"
#include "model/ops.h"

// OpenBLAS's thread count, when the BLAS is OpenBLAS (weak: absent elsewhere).
extern "C" {
__attribute__((weak)) void openblas_set_num_threads(int);
__attribute__((weak)) int openblas_get_num_threads(void);
}

namespace sae {

namespace {

// kLanes floats as one value (GCC/Clang vector extension), as wide as the build's widest vector
// register: AVX-512 16, AVX 8, else 4. Arithmetic on it is element-wise. (A wider generic vector
// is split by GCC into register-sized pieces that go through the stack: a 16-float type on an
// AVX2 build made attention 2.7x slower.)
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
inline Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_lanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }

// Runs body(r) for every r in [0, n) on the pool's threads.
template <class F>
void for_rows(int64_t n, F body) {
  ForkJoinPool::global().run(n, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; r++) body(r);
  });
}

// y = RMSNorm(x) * w over one row of d values; y may be x.
void rmsnorm_row(const float* x, const float* w, float* y, int64_t d, float eps) {
  const float rstd = tk::rmsnorm_rstd(tk::partial_sum_sq(x, d, 0, 1), d, eps);
#pragma omp simd
  for (int64_t i = 0; i < d; i++) y[i] = tk::rmsnorm_elem(x[i], rstd, w[i]);
}

class CpuTransformerOps final : public TransformerOps {
 public:
  // One set of threads for the whole pass: the pool's threads that run the element-wise ops also
  // run the products, each on its share of the rows with a single-threaded sgemm. Alternating
  // with OpenBLAS's own threads leaves one set spinning while the other works, which costs a
  // large part of the time on a 2-core machine.
  void project(Backend& be, bool trans_w, int64_t rows, int64_t out, int64_t in, const float* x, const float* w,
               float* y) override {
    if (rows == 1) {
      // Batch-1 decoding: a matrix-vector product (W stored [out, in] gives W x, [in, out] W^T x).
      if (trans_w) be.gemv(false, out, in, 1.0f, w, in, x, 0.0f, y);
      else be.gemv(true, in, out, 1.0f, w, out, x, 0.0f, y);
      return;
    }
    ForkJoinPool& pool = ForkJoinPool::global();
    if (!openblas_set_num_threads || !openblas_get_num_threads || pool.size() < 2 || rows < 2 * pool.size()) {
      TransformerOps::project(be, trans_w, rows, out, in, x, w, y);
      return;
    }
    const int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    pool.run(rows, [&](int64_t r0, int64_t r1, int) {
      be.gemm(false, trans_w, r1 - r0, out, in, 1.0f, x + r0 * in, in, w, trans_w ? in : out, 0.0f, y + r0 * out, out);
    });
    openblas_set_num_threads(blas_threads);
  }

  void embed(const int32_t* tokens, const int32_t* positions, int64_t rows, const float* wte, const float* wpe,
             int64_t d, float scale, float* out) override {
    embed_rows(tokens, positions, rows, wte, wpe, d, scale, out);
  }
  void embed_bf16(const int32_t* tokens, const int32_t* positions, int64_t rows, const uint16_t* wte, const float* wpe,
                  int64_t d, float scale, float* out) override {
    embed_rows(tokens, positions, rows, wte, wpe, d, scale, out);
  }

  void to_bf16(const float* x, uint16_t* y, int64_t n) override {
    ForkJoinPool::global().run(n, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; i++) y[i] = f32_to_bf16(x[i]);
    });
  }

  void layernorm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t d,
                 float eps) override {
    for_rows(rows, [&](int64_t r) {
      const float* xr = x + r * d;
      float* yr = y + r * d;
      float mean = tk::partial_sum(xr, d, 0, 1) / float(d);
      float rstd = tk::layernorm_rstd(tk::partial_sq_dev(xr, d, mean, 0, 1), d, eps);
#pragma omp simd
      for (int64_t i = 0; i < d; i++) yr[i] = tk::layernorm_elem(xr[i], mean, rstd, w[i], b[i]);
    });
  }

  void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps) override {
    for_rows(rows, [&](int64_t r) { rmsnorm_row(x + r * d, w, y + r * d, d, eps); });
  }

  void qk_rmsnorm(float* qkv, int64_t rows, int n_heads, int n_kv, int dh, const float* wq, const float* wk,
                  float eps) override {
    const int64_t width = int64_t(n_heads + 2 * n_kv) * dh;
    for_rows(rows, [&](int64_t r) {
      for (int h = 0; h < n_heads + n_kv; h++) {
        float* x = qkv + r * width + int64_t(h) * dh;
        rmsnorm_row(x, h < n_heads ? wq : wk, x, dh, eps);  // in place
      }
    });
  }

  void add_bias(float* x, const float* b, int64_t rows, int64_t cols) override {
    for_rows(rows, [&](int64_t r) {
      float* xr = x + r * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; c++) xr[c] += b[c];
    });
  }

  void add(float* y, const float* x, int64_t n) override {
    ForkJoinPool::global().run(n, [&](int64_t b, int64_t e, int) {
#pragma omp simd
      for (int64_t i = b; i < e; i++) y[i] += x[i];
    });
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
    for_rows(rows, [&](int64_t r) {
      const float* g = gu + r * 2 * cols;
      const float* u = g + cols;
      float* o = out + r * cols;
      if (a == tk::Activation::silu) {
#pragma omp simd
        for (int64_t c = 0; c < cols; c++) o[c] = tk::gated(tk::Activation::silu, g[c], u[c]);
      } else {
        for (int64_t c = 0; c < cols; c++) o[c] = tk::gated(a, g[c], u[c]);
      }
    });
  }

  void rope(float* qkv, const int32_t* positions, int64_t rows, int n_heads, int n_kv, int dh, int rot,
            const float* cos, const float* sin) override {
    const int64_t width = int64_t(n_heads + 2 * n_kv) * dh;
    const int half = rot / 2;
    for_rows(rows, [&](int64_t r) {
      const float* c = cos + int64_t(positions[r]) * half;
      const float* s = sin + int64_t(positions[r]) * half;
      for (int h = 0; h < n_heads + n_kv; h++) {  // query heads, then key heads
        float* x = qkv + r * width + int64_t(h) * dh;
#pragma omp simd
        for (int i = 0; i < half; i++) tk::rope_pair(x + i, x + i + half, c[i], s[i]);
      }
    });
  }

  void attend(const AttentionInput& in, float* out, int64_t batch, int n_heads, int n_kv, int dh, float scale,
              float softcap, int64_t window) override {
    const int64_t out_width = int64_t(n_heads) * dh;
    const int group = n_heads / n_kv;
    const int64_t slots = in.q_pos0 + in.n_q;  // keys per sequence
    // Each thread takes a range of (sequence, head) pairs. Both products are register-blocked
    // over 16 lanes (a GCC vector, one AVX-512 register where there is one): 16 scores accumulate
    // over the head dimension, and 16 output dimensions over the keys, so each multiply-add loads
    // one operand instead of loading and storing its accumulator too.
    const int64_t slots_pad = (slots + kLanes - 1) / kLanes * kLanes;
    const int dh_pad = (dh + kLanes - 1) / kLanes * kLanes;
    ForkJoinPool::global().run(batch * n_heads, [&](int64_t first, int64_t last, int) {
      // Per thread: this head's keys transposed to [dh][slots_pad] and its values as
      // [slots][dh_pad] (both zero-padded to whole vectors), the scaled query and the scores.
      std::vector<float> kt(size_t(dh) * size_t(slots_pad), 0.0f), v(size_t(slots) * size_t(dh_pad), 0.0f),
          s(static_cast<size_t>(slots_pad)), q(static_cast<size_t>(dh));
      for (int64_t pair = first; pair < last; pair++) {
        const int64_t b = pair / n_heads;
        const int h = int(pair % n_heads);
        const int kvh = h / group;
        const int64_t start = in.key_start ? in.key_start[b] : 0;
        const float* kb = in.k + b * in.kv_batch_stride + int64_t(kvh) * dh;
        const float* vb = in.v + b * in.kv_batch_stride + int64_t(kvh) * dh;
        // From the first visible slot, or the first query's own slot when that is a pad slot.
        for (int64_t j = std::min(start, in.q_pos0); j < slots; j++) {
          const float* kr = kb + j * in.kv_stride;
          for (int d = 0; d < dh; d++) kt[size_t(d * slots_pad + j)] = kr[d];
          std::memcpy(&v[size_t(j * dh_pad)], vb + j * in.kv_stride, size_t(dh) * sizeof(float));
        }
        for (int64_t t = 0; t < in.n_q; t++) {
          const float* qr = in.q + (b * in.n_q + t) * in.q_stride + int64_t(h) * dh;
          for (int d = 0; d < dh; d++) q[size_t(d)] = qr[d] * scale;
          // Keys lo..p; the score blocks start at a whole vector at or below lo (reading only
          // slots this sequence has filled, or zero padding).
          const int64_t p = in.q_pos0 + t, n = p + 1;
          const int64_t lo = tk::first_key(start, p, window);
          float* sc = s.data();
          for (int64_t j0 = lo / kLanes * kLanes; j0 < n; j0 += kLanes) {
            // Four accumulators: one chain of dependent multiply-adds would wait on each result.
            Lanes a0 = {}, a1 = {}, a2 = {}, a3 = {};
            const float* kr = kt.data() + j0;
            int d = 0;
            for (; d + 4 <= dh; d += 4) {
              a0 += q[size_t(d)] * load_lanes(kr + int64_t(d) * slots_pad);
              a1 += q[size_t(d + 1)] * load_lanes(kr + int64_t(d + 1) * slots_pad);
              a2 += q[size_t(d + 2)] * load_lanes(kr + int64_t(d + 2) * slots_pad);
              a3 += q[size_t(d + 3)] * load_lanes(kr + int64_t(d + 3) * slots_pad);
            }
            for (; d < dh; d++) a0 += q[size_t(d)] * load_lanes(kr + int64_t(d) * slots_pad);
            store_lanes(sc + j0, (a0 + a1) + (a2 + a3));
          }
          if (softcap > 0.0f) {
#pragma omp simd
            for (int64_t j = lo; j < n; j++) sc[j] = tk::softcap(sc[j], softcap);
          }
          float m = -INFINITY;
#pragma omp simd reduction(max : m)
          for (int64_t j = lo; j < n; j++) m = tk::max_f32(m, sc[j]);
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = lo; j < n; j++) {
            sc[j] = tk::softmax_weight(sc[j], m);
            sum += sc[j];
          }
          const float inv = 1.0f / sum;
          float* o = out + (b * in.n_q + t) * out_width + int64_t(h) * dh;
          for (int d0 = 0; d0 < dh; d0 += kLanes) {
            Lanes a0 = {}, a1 = {}, a2 = {}, a3 = {};
            const float* vr = v.data() + d0;
            int64_t j = lo;
            for (; j + 4 <= n; j += 4) {
              a0 += sc[j] * load_lanes(vr + j * dh_pad);
              a1 += sc[j + 1] * load_lanes(vr + (j + 1) * dh_pad);
              a2 += sc[j + 2] * load_lanes(vr + (j + 2) * dh_pad);
              a3 += sc[j + 3] * load_lanes(vr + (j + 3) * dh_pad);
            }
            for (; j < n; j++) a0 += sc[j] * load_lanes(vr + j * dh_pad);
            Lanes acc = ((a0 + a1) + (a2 + a3)) * inv;
            float lanes[kLanes];
            store_lanes(lanes, acc);
            const int k = dh - d0 < kLanes ? dh - d0 : kLanes;
            std::memcpy(o + d0, lanes, size_t(k) * sizeof(float));
          }
        }
      }
    });
  }

  void store_kv(const float* qkv, int64_t batch, int64_t n_new, int n_heads, int n_kv, int dh, float* k, float* v,
                int64_t capacity, int64_t slot0) override {
    const int64_t width = int64_t(n_heads + 2 * n_kv) * dh, kvw = int64_t(n_kv) * dh;
    for_rows(batch * n_new, [&](int64_t r) {
      const int64_t b = r / n_new, slot = slot0 + r % n_new;
      const float* row = qkv + r * width + int64_t(n_heads) * dh;
      std::memcpy(k + (b * capacity + slot) * kvw, row, size_t(kvw) * sizeof(float));
      std::memcpy(v + (b * capacity + slot) * kvw, row + kvw, size_t(kvw) * sizeof(float));
    });
  }

  void softcap(float* x, int64_t n, float cap) override {
    ForkJoinPool::global().run(n, [&](int64_t b, int64_t e, int) {
#pragma omp simd
      for (int64_t i = b; i < e; i++) x[i] = tk::softcap(x[i], cap);
    });
  }

  void log_softmax_nll(float* x, int64_t rows, int64_t vocab, const int32_t* target, float* nll,
                       bool log_probs) override {
    for_rows(rows, [&](int64_t r) {
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
    });
  }

 private:
  // out[r] = widen(wte[tokens[r]]) * scale (+ wpe[positions[r]]) for an f32 or bf16 token table.
  template <class T>
  static void embed_rows(const int32_t* tokens, const int32_t* positions, int64_t rows, const T* wte, const float* wpe,
                         int64_t d, float scale, float* out) {
    for_rows(rows, [&](int64_t r) {
      const T* e = wte + int64_t(tokens[r]) * d;
      float* o = out + r * d;
      if (wpe) {
        const float* p = wpe + int64_t(positions[r]) * d;
#pragma omp simd
        for (int64_t i = 0; i < d; i++) o[i] = tk::embed_elem(e[i], scale, p[i]);
      } else {
#pragma omp simd
        for (int64_t i = 0; i < d; i++) o[i] = tk::embed_elem(e[i], scale, 0.0f);
      }
    });
  }

  template <class F>
  static void rows_apply(float* x, const float* b, int64_t rows, int64_t cols, F f) {
    for_rows(rows, [&](int64_t r) {
      float* xr = x + r * cols;
      if (b) {
#pragma omp simd
        for (int64_t c = 0; c < cols; c++) xr[c] = f(xr[c] + b[c]);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < cols; c++) xr[c] = f(xr[c]);
      }
    });
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
