// The SAE op set on CUDA: __global__ kernels whose per-element bodies are the SAE_HD functions of
// lib/sae/kernels.h (the same ones the CPU op set runs), cuBLAS through Backend::gemm, and
// CUB for scans and the stable sort behind the sparse transpose.
//
// Determinism: no floating-point atomics. Per-row work is one block per row, per-latent work one
// block (or one thread) per latent looping over its entries in order, block reductions use CUB's
// fixed trees, and whole-array sums use a fixed grid whose partial sums are added on the host in
// order. Integer atomics (histogram counts) are exact whatever their order.
#include <cub/cub.cuh>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cuda_check.h"
#include "base/errors.h"
#include "sae/ops.h"
#include "sae/topk_cuda.cuh"

namespace sae {

namespace {

using namespace kern;

constexpr int kThreads = 256;
constexpr int kMaxGrid = 65535 * 4;

inline int grid_for(int64_t n) { return int(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxGrid))); }

#define SAE_LAUNCH_CHECK() SAE_CUDA_CHECK(cudaGetLastError())

using BlockReduceF = cub::BlockReduce<float, kThreads>;
using BlockReduceD = cub::BlockReduce<double, kThreads>;
using BlockScanI = cub::BlockScan<int, kThreads>;

// ---- dense helpers ----

__global__ void k_center(const float* x, const float* b, float* xc, int64_t total, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    xc[i] = x[i] - b[i % d];
}
__global__ void k_set_rows(float* out, const float* v, int64_t total, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = v[i % n];
}
__global__ void k_sub(const float* a, const float* b, float* out, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = a[i] - b[i];
}
__global__ void k_recon_error(const float* xhat, const float* target, float* g, float* err, int64_t d, float scale) {
  __shared__ typename BlockReduceF::TempStorage tmp;
  const int64_t r = blockIdx.x;
  float s = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += recon_grad(xhat[r * d + j], target[r * d + j], scale, &g[r * d + j]);
  float t = BlockReduceF(tmp).Sum(s);
  if (threadIdx.x == 0) err[r] = t;
}
__global__ void k_col_sum(const float* a, int64_t lda, float* out, int64_t B, int64_t n, float alpha, bool acc) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= n) return;
  float s = 0;
  for (int64_t r = 0; r < B; r++) s += a[r * lda + c];
  out[c] = (acc ? out[c] : 0.0f) + alpha * s;
}
__global__ void k_row_norms(const float* A, float* out, int64_t d) {
  __shared__ typename BlockReduceF::TempStorage tmp;
  const int64_t i = blockIdx.x;
  float s = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += A[i * d + j] * A[i * d + j];
  float t = BlockReduceF(tmp).Sum(s);
  if (threadIdx.x == 0) out[i] = sqrtf(t);
}

// ---- top-k per row: radix selection on order-preserving keys, one block per row ----

__device__ __forceinline__ bool allowed(const uint8_t* mask, int64_t l) { return !mask || mask[l]; }

__global__ void k_topk(const float* pre, const float* bias, const uint8_t* mask, int64_t n, int k, int32_t* idx,
                       float* val) {
  const int64_t r = blockIdx.x;
  const float* p = pre + r * n;
  block_topk<kThreads>(
      n, k, [&](int64_t l) { return bias ? p[l] + bias[l] : p[l]; }, [&](int64_t l) { return allowed(mask, l); },
      [](float) { return true; },
      [&](int out, int64_t l, float v) {
        idx[r * k + out] = int32_t(l);
        val[r * k + out] = relu(v);
      });
}

__global__ void k_row_ptr_uniform(int32_t* row_ptr, int64_t B, int k) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r <= B; r += int64_t(gridDim.x) * blockDim.x)
    row_ptr[r] = int32_t(r * k);
}

// ---- batch top-k threshold: a global radix selection in two 16-bit passes ----

__global__ void k_hist_hi(const float* pre, const float* bias, int64_t total, int64_t n, unsigned long long* h) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    float v = bias ? pre[i] + bias[i % n] : pre[i];
    if (v > 0.0f) atomicAdd(&h[(float_key(v) >> 16) & 0x7fffu], 1ull);
  }
}
__global__ void k_hist_lo(const float* pre, const float* bias, int64_t total, int64_t n, uint32_t want,
                          unsigned long long* h) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    float v = bias ? pre[i] + bias[i % n] : pre[i];
    if (!(v > 0.0f)) continue;
    uint32_t key = float_key(v);
    if ((key & 0xffff0000u) == want) atomicAdd(&h[key & 0xffffu], 1ull);
  }
}

// ---- threshold selection into CSR ----

__device__ __forceinline__ bool keep_above(float v, float thr, bool inclusive) {
  return v > 0.0f && (inclusive ? v >= thr : v > thr);
}
__global__ void k_count_above(const float* pre, const float* bias, float thr, bool inclusive, int64_t n, int32_t* cnt) {
  __shared__ typename cub::BlockReduce<int, kThreads>::TempStorage tmp;
  const int64_t r = blockIdx.x;
  int c = 0;
  for (int64_t l = threadIdx.x; l < n; l += blockDim.x) c += keep_above(bias ? pre[r * n + l] + bias[l] : pre[r * n + l], thr, inclusive);
  int t = cub::BlockReduce<int, kThreads>(tmp).Sum(c);
  if (threadIdx.x == 0) cnt[r] = t;
}
__global__ void k_fill_above(const float* pre, const float* bias, float thr, bool inclusive, int64_t n,
                             const int32_t* row_ptr, int32_t* idx, float* val) {
  __shared__ typename BlockScanI::TempStorage scan;
  __shared__ int s_out;
  const int64_t r = blockIdx.x;
  if (threadIdx.x == 0) s_out = row_ptr[r];
  __syncthreads();
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t l = base + threadIdx.x;
    float v = l < n ? (bias ? pre[r * n + l] + bias[l] : pre[r * n + l]) : 0.0f;
    int sel = l < n && keep_above(v, thr, inclusive), pos, total;
    BlockScanI(scan).ExclusiveSum(sel, pos, total);
    if (sel) {
      idx[s_out + pos] = int32_t(l);
      val[s_out + pos] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) s_out += total;
    __syncthreads();
  }
}

// ---- sparse decode and backward ----

__global__ void k_sparse_decode(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D,
                                const float* bias, const float* target, Groups groups, float gscale, float* xhat,
                                float* G, float* err, int64_t d) {
  __shared__ typename BlockReduceF::TempStorage tmp;
  const int64_t r = blockIdx.x;
  const int ng = groups.n;
  const int32_t e0 = row_ptr[r], e1 = row_ptr[r + 1];
  float part[kMaxGroups];
  for (int t = 0; t < ng; t++) part[t] = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = bias ? bias[j] : 0.0f;
    int32_t e = e0;
    for (int t = 0; t < ng; t++) {
      for (; e < e1 && (t == ng - 1 || idx[e] < groups.end[t]); e++) acc += val[e] * D[int64_t(idx[e]) * d + j];
      if (target && (G || err)) {
        float g;
        part[t] += recon_grad(acc, target[r * d + j], gscale, &g);
        if (G) G[(r * ng + t) * d + j] = g;
      }
    }
    xhat[r * d + j] = acc;
    if (G && target)
      for (int t = ng - 2; t >= 0; t--) G[(r * ng + t) * d + j] += G[(r * ng + t + 1) * d + j];
  }
  if (err && target)
    for (int t = 0; t < ng; t++) {
      float s = BlockReduceF(tmp).Sum(part[t]);
      if (threadIdx.x == 0) err[r * ng + t] = s;
      __syncthreads();
    }
}

// One warp per entry of the row: dot(D[idx[e]], G[r, group]) with a fixed shuffle tree.
__global__ void k_sparse_dpre(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D,
                              const float* G, Groups groups, float* dpre, int64_t d) {
  const int64_t r = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int32_t e = row_ptr[r] + warp; e < row_ptr[r + 1]; e += nw) {
    const float* drow = D + int64_t(idx[e]) * d;
    const float* g = G + (r * groups.n + group_of(groups, idx[e])) * d;
    float s = 0;
    for (int64_t j = lane; j < d; j += 32) s += drow[j] * g[j];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if (lane == 0) dpre[e] = val[e] > 0.0f ? s : 0.0f;
  }
}

__global__ void k_sparse_dx(const int32_t* row_ptr, const int32_t* idx, const float* dpre, const float* E, float* dx,
                            int64_t d, bool acc) {
  const int64_t r = blockIdx.x;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float s = acc ? dx[r * d + j] : 0.0f;
    for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) s += dpre[e] * E[int64_t(idx[e]) * d + j];
    dx[r * d + j] = s;
  }
}

__global__ void k_entry_rows(const int32_t* row_ptr, int64_t B, int32_t* rows) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < B; r += int64_t(gridDim.x) * blockDim.x)
    for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) rows[e] = int32_t(r);
}
__global__ void k_iota(int32_t* v, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    v[i] = int32_t(i);
}
__global__ void k_lat_ptr(const int32_t* sorted_keys, int64_t nnz, int64_t n, const int32_t* ent, const int32_t* erow_by_entry,
                          const float* val, int32_t* lat_ptr, int32_t* ent_row, int32_t* fires) {
  for (int64_t l = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; l <= n; l += int64_t(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = nnz;  // first position with key >= l
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (sorted_keys[mid] < l) lo = mid + 1;
      else hi = mid;
    }
    lat_ptr[l] = int32_t(lo);
  }
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < nnz; p += int64_t(gridDim.x) * blockDim.x)
    ent_row[p] = erow_by_entry[ent[p]];
  (void)val;
  (void)fires;
}
__global__ void k_fires(const int32_t* lat_ptr, const int32_t* ent, const float* val, int64_t n, int32_t* fires) {
  for (int64_t l = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; l < n; l += int64_t(gridDim.x) * blockDim.x) {
    int32_t c = 0;
    for (int32_t p = lat_ptr[l]; p < lat_ptr[l + 1]; p++) c += val[ent[p]] > 0.0f;
    fires[l] = c;
  }
}

__global__ void k_sparse_param_grads(const int32_t* lat_ptr, const int32_t* ent, const int32_t* ent_row,
                                     const float* val, const float* dpre, const float* G, Groups groups,
                                     const float* xc, float* gD, float* gE, float* gb, int64_t d, bool acc) {
  const int64_t l = blockIdx.x;
  const int32_t p0 = lat_ptr[l], p1 = lat_ptr[l + 1];
  const int t = group_of(groups, int32_t(l));
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float sd = acc ? gD[l * d + j] : 0.0f, se = acc ? gE[l * d + j] : 0.0f;
    for (int32_t p = p0; p < p1; p++) {
      const int32_t e = ent[p];
      const int64_t r = ent_row[p];
      sd += val[e] * G[(r * groups.n + t) * d + j];
      se += dpre[e] * xc[r * d + j];
    }
    gD[l * d + j] = sd;
    gE[l * d + j] = se;
  }
  if (threadIdx.x == 0) {
    float b = 0;
    for (int32_t p = p0; p < p1; p++) b += dpre[ent[p]];
    gb[l] = (acc ? gb[l] : 0.0f) + b;
  }
}

struct MinOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fminf(a, b); }
};

__global__ void k_min_positive(const float* v, int64_t n, float* part) {
  __shared__ typename BlockReduceF::TempStorage tmp;
  float m = INFINITY;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (v[i] > 0.0f) m = fminf(m, v[i]);
  float t = BlockReduceF(tmp).Reduce(m, MinOp());
  if (threadIdx.x == 0) part[blockIdx.x] = t;
}

// ---- dense architectures: one thread per latent (column), looping over the rows ----

__global__ void k_relu_fwd(float* pre, const float* bias, float* f, int32_t* fires, float* colsum, int64_t B,
                           int64_t n) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  float s = 0;
  int32_t c = 0;
  const float b = bias ? bias[j] : 0.0f;
  for (int64_t r = 0; r < B; r++) {
    float v = pre[r * n + j] + b;
    pre[r * n + j] = v;
    float a = relu(v);
    f[r * n + j] = a;
    s += a;
    c += a > 0.0f;
  }
  colsum[j] = s;
  fires[j] = c;
}
__global__ void k_relu_bwd(const float* df, const float* f, const float* norms, float coef, float* dpre, int64_t total,
                           int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    dpre[i] = relu_dpre(df[i], f[i], norms[i % n], coef);
}
__global__ void k_l1_norm_grad(const float* colsum, const float* norms, const float* D, float coef, float* gD,
                               int64_t total, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = i / d;
    if (norms[l] > 0.0f) gD[i] += coef * colsum[l] / norms[l] * D[i];
  }
}
__global__ void k_jumprelu_fwd(float* pre, const float* bias, const float* log_thr, float* f, int32_t* fires, int64_t B,
                               int64_t n) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  const float thr = expf(log_thr[j]), b = bias ? bias[j] : 0.0f;
  int32_t c = 0;
  for (int64_t r = 0; r < B; r++) {
    float v = pre[r * n + j] + b;
    pre[r * n + j] = v;
    f[r * n + j] = jumprelu(v, thr);
    c += v > thr;
  }
  fires[j] = c;
}
__global__ void k_jumprelu_bwd(const float* df, const float* pre, const float* log_thr, const int32_t* fires,
                               float inv_eps, float lambda, float freq_scale, float* dpre, float* g_log_thr, int64_t B,
                               int64_t n) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  const float thr = expf(log_thr[j]);
  const float c = l0_coef(float(fires[j]) / float(B), lambda, freq_scale) / float(B);
  float s = 0;
  for (int64_t r = 0; r < B; r++) {
    float dt;
    dpre[r * n + j] = jumprelu_grad(pre[r * n + j], thr, df[r * n + j], inv_eps, c, &dt);
    s += dt;
  }
  g_log_thr[j] = thr * s;
}
__global__ void k_gated_fwd(const float* base, const float* b_gate, const float* r_mag, const float* b_mag, float* f,
                            float* gate_relu, int32_t* fires, float* gate_sum, int64_t B, int64_t n) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  int32_t c = 0;
  float s = 0;
  for (int64_t r = 0; r < B; r++) {
    GatedFwd o = kern::gated_fwd(base[r * n + j], b_gate[j], r_mag[j], b_mag[j]);
    f[r * n + j] = o.f;
    gate_relu[r * n + j] = o.gate_relu;
    c += o.f > 0.0f;
    s += o.gate_relu;
  }
  fires[j] = c;
  gate_sum[j] = s;
}
__global__ void k_gated_bwd(const float* base, const float* df, const float* dgr, const float* b_gate,
                            const float* r_mag, const float* b_mag, float l1, float* dbase, float* g_b_gate,
                            float* g_r_mag, float* g_b_mag, int64_t B, int64_t n) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  float sg = 0, sr = 0, sm = 0;
  for (int64_t r = 0; r < B; r++) {
    GatedBwd o = kern::gated_bwd(base[r * n + j], df[r * n + j], dgr[r * n + j], b_gate[j], r_mag[j], b_mag[j], l1);
    dbase[r * n + j] = o.dbase;
    sg += o.dpi_gate;
    sr += o.dr_mag;
    sm += o.dpi_mag;
  }
  g_b_gate[j] = sg;
  g_r_mag[j] = sr;
  g_b_mag[j] = sm;
}

// ---- reductions and the optimiser ----

constexpr int kSumGrid = 256;  // fixed, so the partial sums (and their order) never change

template <int Mode>  // 0: sum of squares, 1: sum, 2: dot
__global__ void k_sum(const float* a, const float* b, int64_t n, double* part) {
  __shared__ typename BlockReduceD::TempStorage tmp;
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double x = a[i];
    s += Mode == 0 ? x * x : Mode == 1 ? x : x * double(b[i]);
  }
  double t = BlockReduceD(tmp).Sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = t;
}

__global__ void k_adam(float* p, const float* g, float* m, float* v, int64_t n, AdamStep s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    adam_update(&p[i], g[i], &m[i], &v[i], s);
}

__global__ void k_remove_parallel(const float* D, float* gD, int64_t d) {
  __shared__ typename BlockReduceF::TempStorage tmp;
  __shared__ float s_dot;
  const int64_t i = blockIdx.x;
  float s = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += gD[i * d + j] * D[i * d + j];
  float t = BlockReduceF(tmp).Sum(s);
  if (threadIdx.x == 0) s_dot = t;
  __syncthreads();
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) gD[i * d + j] -= s_dot * D[i * d + j];
}
__global__ void k_normalize_rows(float* D, int64_t d) {
  __shared__ typename BlockReduceF::TempStorage tmp;
  __shared__ float s_inv;
  const int64_t i = blockIdx.x;
  float s = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += D[i * d + j] * D[i * d + j];
  float t = BlockReduceF(tmp).Sum(s);
  if (threadIdx.x == 0) s_inv = t > 0.0f ? 1.0f / sqrtf(t) : 0.0f;
  __syncthreads();
  if (s_inv == 0.0f) return;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) D[i * d + j] *= s_inv;
}

// ---------------------------------------------------------------------------------------------

class CudaOps final : public SaeOps {
 public:
  CudaOps() : be_(make_cuda_backend()) {}
  Backend& backend() override { return *be_; }
  const char* name() const override { return "cuda"; }

  void center(const float* x, const float* b, float* xc, int64_t B, int64_t d) override {
    k_center<<<grid_for(B * d), kThreads>>>(x, b, xc, B * d, d);
    SAE_LAUNCH_CHECK();
  }
  void set_rows(float* out, const float* v, int64_t B, int64_t n) override {
    k_set_rows<<<grid_for(B * n), kThreads>>>(out, v, B * n, n);
    SAE_LAUNCH_CHECK();
  }
  void sub(const float* a, const float* b, float* out, int64_t count) override {
    k_sub<<<grid_for(count), kThreads>>>(a, b, out, count);
    SAE_LAUNCH_CHECK();
  }
  void recon_error(const float* xhat, const float* target, float* g, float* err, int64_t B, int64_t d,
                   float scale) override {
    if (B == 0) return;
    k_recon_error<<<unsigned(B), kThreads>>>(xhat, target, g, err, d, scale);
    SAE_LAUNCH_CHECK();
  }
  void col_sum(const float* a, int64_t lda, float* out, int64_t B, int64_t n, float alpha, bool accumulate) override {
    k_col_sum<<<grid_for(n), kThreads>>>(a, lda, out, B, n, alpha, accumulate);
    SAE_LAUNCH_CHECK();
  }
  void row_norms(const float* A, float* out, int64_t n, int64_t d) override {
    if (n == 0) return;
    k_row_norms<<<unsigned(n), kThreads>>>(A, out, d);
    SAE_LAUNCH_CHECK();
  }

  void topk(const float* pre, const float* bias, const uint8_t* mask, int64_t B, int64_t n, int k, int32_t* row_ptr,
            int32_t* idx, float* val) override {
    if (B > 0) {
      k_topk<<<unsigned(B), kThreads>>>(pre, bias, mask, n, k, idx, val);
      SAE_LAUNCH_CHECK();
    }
    k_row_ptr_uniform<<<grid_for(B + 1), kThreads>>>(row_ptr, B, k);
    SAE_LAUNCH_CHECK();
  }

  float batch_kth(const float* pre, const float* bias, int64_t B, int64_t n, int64_t kk) override {
    if (kk <= 0) return 0.0f;
    unsigned long long* h = scratch_as<unsigned long long>(65536);
    SAE_CUDA_CHECK(cudaMemset(h, 0, 32768 * sizeof(unsigned long long)));
    k_hist_hi<<<grid_for(B * n), kThreads>>>(pre, bias, B * n, n, h);
    SAE_LAUNCH_CHECK();
    std::vector<unsigned long long> h1(32768);
    be_->to_host(h1.data(), h, h1.size() * sizeof(unsigned long long));
    unsigned long long positive = 0;
    for (auto c : h1) positive += c;
    if (positive < (unsigned long long)kk) return 0.0f;
    long long need = kk;
    int hb = 32767;
    for (; hb > 0 && (long long)h1[size_t(hb)] < need; hb--) need -= (long long)h1[size_t(hb)];
    const uint32_t want = 0x80000000u | (uint32_t(hb) << 16);
    SAE_CUDA_CHECK(cudaMemset(h, 0, 65536 * sizeof(unsigned long long)));
    k_hist_lo<<<grid_for(B * n), kThreads>>>(pre, bias, B * n, n, want, h);
    SAE_LAUNCH_CHECK();
    std::vector<unsigned long long> h2(65536);
    be_->to_host(h2.data(), h, h2.size() * sizeof(unsigned long long));
    int lb = 65535;
    for (; lb > 0 && (long long)h2[size_t(lb)] < need; lb--) need -= (long long)h2[size_t(lb)];
    return key_float(want | uint32_t(lb));
  }

  int64_t select_above(const float* pre, const float* bias, float thr, bool inclusive, int64_t B, int64_t n,
                       int32_t* row_ptr, int32_t* idx, float* val, int64_t cap) override {
    if (B == 0) {
      SAE_CUDA_CHECK(cudaMemset(row_ptr, 0, sizeof(int32_t)));
      return 0;
    }
    int32_t* cnt = scratch_i32_.ensure(*be_, size_t(B));
    k_count_above<<<unsigned(B), kThreads>>>(pre, bias, thr, inclusive, n, cnt);
    SAE_LAUNCH_CHECK();
    // row_ptr = [0, inclusive prefix sums of the counts]
    SAE_CUDA_CHECK(cudaMemset(row_ptr, 0, sizeof(int32_t)));
    size_t bytes = 0;
    SAE_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, bytes, cnt, row_ptr + 1, int(B)));
    void* tmp = scratch_as<char>(bytes);
    SAE_CUDA_CHECK(cub::DeviceScan::InclusiveSum(tmp, bytes, cnt, row_ptr + 1, int(B)));
    int32_t nnz = 0;
    be_->to_host(&nnz, row_ptr + B, sizeof(int32_t));
    if (nnz > cap) return nnz;
    k_fill_above<<<unsigned(B), kThreads>>>(pre, bias, thr, inclusive, n, row_ptr, idx, val);
    SAE_LAUNCH_CHECK();
    return nnz;
  }

  void sparse_decode(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* bias,
                     const float* target, Groups groups, float gscale, float* xhat, float* G, float* err, int64_t B,
                     int64_t d) override {
    if (B == 0) return;
    k_sparse_decode<<<unsigned(B), kThreads>>>(row_ptr, idx, val, D, bias, target, groups, gscale, xhat, G, err, d);
    SAE_LAUNCH_CHECK();
  }
  void sparse_dpre(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* G,
                   Groups groups, float* dpre, int64_t B, int64_t d) override {
    if (B == 0) return;
    k_sparse_dpre<<<unsigned(B), kThreads>>>(row_ptr, idx, val, D, G, groups, dpre, d);
    SAE_LAUNCH_CHECK();
  }
  void sparse_dx(const int32_t* row_ptr, const int32_t* idx, const float* dpre, const float* E, float* dx, int64_t B,
                 int64_t d, bool accumulate) override {
    if (B == 0) return;
    k_sparse_dx<<<unsigned(B), kThreads>>>(row_ptr, idx, dpre, E, dx, d, accumulate);
    SAE_LAUNCH_CHECK();
  }
  void sparse_transpose(const int32_t* row_ptr, const int32_t* idx, const float* val, int64_t B, int64_t n,
                        int64_t nnz, int32_t* lat_ptr, int32_t* ent, int32_t* ent_row, int32_t* fires) override {
    // A stable radix sort of (latent, entry) pairs: entries arrive in row order, so each latent's
    // entries stay in row order, and every later per-latent sum has a fixed order.
    int32_t* keys_out = scratch_keys_.ensure(*be_, size_t(std::max<int64_t>(nnz, 1)));
    int32_t* vals_in = scratch_vals_.ensure(*be_, size_t(std::max<int64_t>(nnz, 1)));
    int32_t* rows = scratch_rows_.ensure(*be_, size_t(std::max<int64_t>(nnz, 1)));
    if (nnz > 0) {
      k_iota<<<grid_for(nnz), kThreads>>>(vals_in, nnz);
      SAE_LAUNCH_CHECK();
      k_entry_rows<<<grid_for(B), kThreads>>>(row_ptr, B, rows);
      SAE_LAUNCH_CHECK();
      int end_bit = 1;
      while (end_bit < 31 && (int64_t(1) << end_bit) < n) end_bit++;
      size_t bytes = 0;
      SAE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, idx, keys_out, vals_in, ent, int(nnz), 0, end_bit));
      void* tmp = scratch_as<char>(bytes);
      SAE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp, bytes, idx, keys_out, vals_in, ent, int(nnz), 0, end_bit));
    }
    k_lat_ptr<<<grid_for(std::max(n + 1, nnz)), kThreads>>>(keys_out, nnz, n, ent, rows, val, lat_ptr, ent_row, fires);
    SAE_LAUNCH_CHECK();
    if (fires) {
      k_fires<<<grid_for(n), kThreads>>>(lat_ptr, ent, val, n, fires);
      SAE_LAUNCH_CHECK();
    }
  }
  void sparse_param_grads(const int32_t* lat_ptr, const int32_t* ent, const int32_t* ent_row, const float* val,
                          const float* dpre, const float* G, Groups groups, const float* xc, float* gD, float* gE,
                          float* gb, int64_t n, int64_t d, bool accumulate) override {
    if (n == 0) return;
    k_sparse_param_grads<<<unsigned(n), kThreads>>>(lat_ptr, ent, ent_row, val, dpre, G, groups, xc, gD, gE, gb, d,
                                                     accumulate);
    SAE_LAUNCH_CHECK();
  }
  float min_positive(const float* val, int64_t count) override {
    const int grid = std::min(kSumGrid, grid_for(count));
    float* part = scratch_as<float>(size_t(grid));
    k_min_positive<<<grid, kThreads>>>(val, count, part);
    SAE_LAUNCH_CHECK();
    std::vector<float> h(static_cast<size_t>(grid));
    be_->to_host(h.data(), part, h.size() * 4);
    float m = INFINITY;
    for (float v : h) m = std::min(m, v);
    return std::isinf(m) ? 0.0f : m;
  }

  void relu_fwd(float* pre, const float* bias, float* f, int32_t* fires, float* colsum_f, int64_t B,
                int64_t n) override {
    k_relu_fwd<<<grid_for(n), kThreads>>>(pre, bias, f, fires, colsum_f, B, n);
    SAE_LAUNCH_CHECK();
  }
  void relu_bwd(const float* df, const float* f, const float* norms, float coef, float* dpre, int64_t B,
                int64_t n) override {
    k_relu_bwd<<<grid_for(B * n), kThreads>>>(df, f, norms, coef, dpre, B * n, n);
    SAE_LAUNCH_CHECK();
  }
  void l1_norm_grad(const float* colsum_f, const float* norms, const float* D, float coef, float* gD, int64_t n,
                    int64_t d) override {
    k_l1_norm_grad<<<grid_for(n * d), kThreads>>>(colsum_f, norms, D, coef, gD, n * d, d);
    SAE_LAUNCH_CHECK();
  }
  void jumprelu_fwd(float* pre, const float* bias, const float* log_thr, float* f, int32_t* fires, int64_t B,
                    int64_t n) override {
    k_jumprelu_fwd<<<grid_for(n), kThreads>>>(pre, bias, log_thr, f, fires, B, n);
    SAE_LAUNCH_CHECK();
  }
  void jumprelu_bwd(const float* df, const float* pre, const float* log_thr, const int32_t* fires, float inv_eps,
                    float lambda, float freq_scale, float* dpre, float* g_log_thr, int64_t B, int64_t n) override {
    k_jumprelu_bwd<<<grid_for(n), kThreads>>>(df, pre, log_thr, fires, inv_eps, lambda, freq_scale, dpre, g_log_thr, B,
                                              n);
    SAE_LAUNCH_CHECK();
  }
  void gated_fwd(const float* base, const float* b_gate, const float* r_mag, const float* b_mag, float* f,
                 float* gate_relu, int32_t* fires, float* gate_sum, int64_t B, int64_t n) override {
    k_gated_fwd<<<grid_for(n), kThreads>>>(base, b_gate, r_mag, b_mag, f, gate_relu, fires, gate_sum, B, n);
    SAE_LAUNCH_CHECK();
  }
  void gated_bwd(const float* base, const float* df, const float* dgr, const float* b_gate, const float* r_mag,
                 const float* b_mag, float l1, float* dbase, float* g_b_gate, float* g_r_mag, float* g_b_mag, int64_t B,
                 int64_t n) override {
    k_gated_bwd<<<grid_for(n), kThreads>>>(base, df, dgr, b_gate, r_mag, b_mag, l1, dbase, g_b_gate, g_r_mag, g_b_mag,
                                           B, n);
    SAE_LAUNCH_CHECK();
  }

  double sumsq(const float* a, int64_t count) override { return reduce<0>(a, nullptr, count); }
  double sum(const float* a, int64_t count) override { return reduce<1>(a, nullptr, count); }
  double dot(const float* a, const float* b, int64_t count) override { return reduce<2>(a, b, count); }
  void adam(float* p, const float* g, float* m, float* v, int64_t count, const AdamStep& s) override {
    k_adam<<<grid_for(count), kThreads>>>(p, g, m, v, count, s);
    SAE_LAUNCH_CHECK();
  }
  void remove_parallel(const float* D, float* gD, int64_t n, int64_t d) override {
    if (n == 0) return;
    k_remove_parallel<<<unsigned(n), kThreads>>>(D, gD, d);
    SAE_LAUNCH_CHECK();
  }
  void normalize_rows(float* D, int64_t n, int64_t d) override {
    if (n == 0) return;
    k_normalize_rows<<<unsigned(n), kThreads>>>(D, d);
    SAE_LAUNCH_CHECK();
  }

 private:
  // Device scratch that grows as needed and is reused across calls.
  template <class T>
  struct Scratch {
    Buffer<T> buf;
    T* ensure(Backend& be, size_t n) {
      if (buf.size() < n) buf = Buffer<T>(be, std::max(n, buf.size() * 2));
      return buf.data();
    }
  };
  template <class T>
  T* scratch_as(size_t n) {
    return reinterpret_cast<T*>(scratch_.ensure(*be_, (n * sizeof(T) + 15) / 16 * 16));
  }
  template <int Mode>
  double reduce(const float* a, const float* b, int64_t count) {
    double* part = scratch_as<double>(kSumGrid);
    k_sum<Mode><<<kSumGrid, kThreads>>>(a, b, count, part);
    SAE_LAUNCH_CHECK();
    std::vector<double> h(kSumGrid);
    be_->to_host(h.data(), part, h.size() * sizeof(double));
    double s = 0;
    for (double v : h) s += v;
    return s;
  }
  std::unique_ptr<Backend> be_;
  Scratch<char> scratch_;
  Scratch<int32_t> scratch_i32_, scratch_keys_, scratch_vals_, scratch_rows_;
};

}  // namespace

std::unique_ptr<SaeOps> make_cuda_ops_impl() { return std::make_unique<CudaOps>(); }

}  // namespace sae
