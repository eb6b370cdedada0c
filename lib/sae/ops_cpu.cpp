// The SAE op set on the CPU: OpenMP loops, OpenBLAS through Backend::gemm. It calls the per-element
// functions of sae/kernels.h, which the CUDA kernels (ops_cuda.cu) and the plain reference
// (ops_reference.cpp, what sae-selftest and the unit tests compare this file with) call too.
//
// Determinism: every reduction has one fixed order that does not depend on the thread count.
// Per-row work is split by rows, per-latent work by latents (each output written by one thread),
// and whole-array sums are taken over fixed-size blocks whose partial sums are added in order.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "base/errors.h"
#include "sae/ops.h"

namespace sae {

using namespace kern;

namespace {

constexpr int64_t kSumBlock = 1 << 16;  // fixed block of the blocked double sums
constexpr int64_t kColChunk = 256;      // columns per task in column reductions
// Below this much work (element operations) a loop runs on one thread: on a loaded machine an
// OpenMP fork/join costs more than a small loop.
constexpr int64_t kParMin = int64_t(1) << 18;

// ---------------------------------------------------------------------------------------------
// Helpers shared by the fast CPU ops.

// The column-chunked loop of the per-latent reductions (col_sum and the dense activations): the n
// columns are cut into chunks of kColChunk, one task each, and a task walks every row of its chunk,
// so each column is summed in row order whatever the thread count, in accumulators that stay in L1.
// body(c0, c1) does the columns [c0, c1).
template <class Body>
void for_column_chunks(int64_t B, int64_t n, Body body) {
  const int64_t chunks = (n + kColChunk - 1) / kColChunk;
#pragma omp parallel for schedule(static) if (B * n > kParMin)
  for (int64_t c = 0; c < chunks; c++) body(c * kColChunk, std::min(n, (c + 1) * kColChunk));
}

// Per-row top-k with a running threshold: candidates above the current k-th best go to a small
// buffer, which is cut back to the best k whenever it fills. Each row is O(n) compares (a
// vectorised max per block of 16 once the threshold has settled) plus a few partial selections
// over the buffer. Candidates are packed as 64-bit keys, the order-preserving bits of the value
// above the complemented index, so that one integer comparison orders them by value and breaks
// ties towards the lower index.
struct TopkScratch {
  std::vector<uint64_t> key;
};

inline uint64_t pack_key(float v, int64_t l) { return (uint64_t(float_key(v)) << 32) | uint64_t(0xffffffffu - uint32_t(l)); }
inline int32_t key_index(uint64_t k) { return int32_t(0xffffffffu - uint32_t(k & 0xffffffffu)); }
inline float key_value(uint64_t k) { return key_float(uint32_t(k >> 32)); }

void topk_row(const float* p, const float* bias, const uint8_t* mask, int64_t n, int k, TopkScratch& s, int32_t* idx_out,
              float* val_out) {
  const size_t cap = size_t(std::max(4 * k, 64));
  if (s.key.size() < cap) s.key.resize(cap);
  uint64_t* ck = s.key.data();
  size_t cnt = 0;
  float thr = -std::numeric_limits<float>::infinity();
  auto shrink = [&]() {
    std::nth_element(ck, ck + (k - 1), ck + cnt, std::greater<uint64_t>());
    cnt = size_t(k);
    thr = key_value(*std::min_element(ck, ck + cnt));
  };
  // A later latent equal to the current k-th value has a higher index, so it loses the tie: only
  // strictly greater values can enter.
  auto consider = [&](int64_t l, float v) {
    if (!(v > thr)) return;
    ck[cnt++] = pack_key(v, l);
    if (cnt == cap) shrink();
  };
  int64_t l = 0;
  if (!mask) {
    constexpr int64_t W = 16;
    for (; l + W <= n; l += W) {
      float v[W];
      float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
      for (int64_t j = 0; j < W; j++) {
        v[j] = bias ? p[l + j] + bias[l + j] : p[l + j];
        mx = std::max(mx, v[j]);
      }
      if (!(mx > thr)) continue;
      for (int64_t j = 0; j < W; j++) consider(l + j, v[j]);
    }
  }
  for (; l < n; l++) {
    if (mask && !mask[l]) continue;
    consider(l, bias ? p[l] + bias[l] : p[l]);
  }
  if (cnt > size_t(k)) shrink();
  if (cnt < size_t(k)) throw std::logic_error("topk: fewer candidates than k in a row");
  // Output in ascending latent order: descending complemented index.
  std::sort(ck, ck + cnt, [](uint64_t a, uint64_t b) { return uint32_t(a) > uint32_t(b); });
  for (size_t j = 0; j < cnt; j++) {
    idx_out[j] = key_index(ck[j]);
    val_out[j] = relu(key_value(ck[j]));
  }
}

// Blocked double sum of f(i) over [0, count) in a thread-count independent order.
template <class F>
double blocked_sum(int64_t count, F f) {
  int64_t nb = (count + kSumBlock - 1) / kSumBlock;
  std::vector<double> part(static_cast<size_t>(std::max<int64_t>(nb, 1)), 0.0);
#pragma omp parallel for schedule(static) if (count > kParMin)
  for (int64_t b = 0; b < nb; b++) {
    int64_t lo = b * kSumBlock, hi = std::min(count, lo + kSumBlock);
    double acc = 0;
    for (int64_t i = lo; i < hi; i++) acc += f(i);
    part[size_t(b)] = acc;
  }
  double t = 0;
  for (double p : part) t += p;
  return t;
}

// Partial reconstruction of row r by groups (the reference computes it independently).
void decode_row(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* bias,
                const float* target, const Groups& groups, float gscale, float* xhat, float* G, float* err,
                int64_t r, int64_t d, float* acc) {
  if (bias)
    std::memcpy(acc, bias, size_t(d) * 4);
  else
    std::memset(acc, 0, size_t(d) * 4);
  int32_t e = row_ptr[r], end = row_ptr[r + 1];
  const int ng = groups.n;
  for (int t = 0; t < ng; t++) {
    for (; e < end && (t == ng - 1 || idx[e] < groups.end[t]); e++) {
      const float v = val[e];
      const float* drow = D + int64_t(idx[e]) * d;
#pragma omp simd
      for (int64_t j = 0; j < d; j++) acc[j] += v * drow[j];
    }
    if (target && (G || err)) {
      const float* x = target + r * d;
      float* g = G ? G + (r * ng + t) * d : nullptr;
      float s = 0;
      if (g) {
        for (int64_t j = 0; j < d; j++) s += recon_grad(acc[j], x[j], gscale, &g[j]);
      } else {
        float dummy;
        for (int64_t j = 0; j < d; j++) s += recon_grad(acc[j], x[j], gscale, &dummy);
      }
      if (err) err[r * ng + t] = s;
    }
  }
  std::memcpy(xhat + r * d, acc, size_t(d) * 4);
  if (G && target)
    for (int t = ng - 2; t >= 0; t--) {
      float* g = G + (r * ng + t) * d;
      const float* g1 = G + (r * ng + t + 1) * d;
      for (int64_t j = 0; j < d; j++) g[j] += g1[j];
    }
}

// ---------------------------------------------------------------------------------------------
class CpuOps : public SaeOps {
 public:
  CpuOps() : be_(make_cpu_backend()) {}
  Backend& backend() override { return *be_; }
  const char* name() const override { return "cpu"; }

  void center(const float* x, const float* b, float* xc, int64_t B, int64_t d) override {
#pragma omp parallel for schedule(static) if (B * d > kParMin)
    for (int64_t r = 0; r < B; r++) {
      const float* xr = x + r * d;
      float* o = xc + r * d;
#pragma omp simd
      for (int64_t j = 0; j < d; j++) o[j] = xr[j] - b[j];
    }
  }

  void set_rows(float* out, const float* v, int64_t B, int64_t n) override {
#pragma omp parallel for schedule(static) if (B * n > kParMin)
    for (int64_t r = 0; r < B; r++) std::memcpy(out + r * n, v, size_t(n) * 4);
  }

  void sub(const float* a, const float* b, float* out, int64_t count) override {
#pragma omp parallel for simd schedule(static) if (count > kParMin)
    for (int64_t i = 0; i < count; i++) out[i] = a[i] - b[i];
  }

  void recon_error(const float* xhat, const float* target, float* g, float* err, int64_t B, int64_t d,
                   float scale) override {
#pragma omp parallel for schedule(static) if (B * d > kParMin)
    for (int64_t r = 0; r < B; r++) {
      float s = 0;
      for (int64_t j = 0; j < d; j++) s += recon_grad(xhat[r * d + j], target[r * d + j], scale, &g[r * d + j]);
      err[r] = s;
    }
  }

  void col_sum(const float* a, int64_t lda, float* out, int64_t B, int64_t n, float alpha, bool accumulate) override {
    for_column_chunks(B, n, [&](int64_t c0, int64_t c1) {
      float acc[kColChunk] = {0};
      for (int64_t r = 0; r < B; r++) {
        const float* ar = a + r * lda;
#pragma omp simd
        for (int64_t j = c0; j < c1; j++) acc[j - c0] += ar[j];
      }
      for (int64_t j = c0; j < c1; j++) out[j] = (accumulate ? out[j] : 0.0f) + alpha * acc[j - c0];
    });
  }

  void row_norms(const float* A, float* out, int64_t n, int64_t d) override {
#pragma omp parallel for schedule(static) if (n * d > kParMin)
    for (int64_t i = 0; i < n; i++) {
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < d; j++) s += A[i * d + j] * A[i * d + j];
      out[i] = std::sqrt(s);
    }
  }

  void topk(const float* pre, const float* bias, const uint8_t* mask, int64_t B, int64_t n, int k, int32_t* row_ptr,
            int32_t* idx, float* val) override {
#pragma omp parallel if (B * n > kParMin)
    {
      TopkScratch s;
#pragma omp for schedule(static)
      for (int64_t r = 0; r < B; r++) topk_row(pre + r * n, bias, mask, n, k, s, idx + r * k, val + r * k);
    }
    for (int64_t r = 0; r <= B; r++) row_ptr[r] = int32_t(r * k);
  }

  float batch_kth(const float* pre, const float* bias, int64_t B, int64_t n, int64_t kk) override {
    // Radix selection over the order-preserving keys of the positive values (their keys all have
    // the top bit set): a histogram of the next 15 bits, then of the low 16 bits inside the
    // bucket that holds the kk-th largest. Exact, two passes, per-thread histograms merged in order.
    if (kk <= 0) return 0.0f;
    const int nt = omp_get_max_threads();
    constexpr size_t H1 = 32768, H2 = 65536;
    std::vector<int64_t> hist(static_cast<size_t>(nt) * H2, 0);
    auto pass = [&](bool second, uint32_t want) {
      std::fill(hist.begin(), hist.end(), 0);
#pragma omp parallel num_threads(nt) if (B * n > kParMin)
      {
        int64_t* h = hist.data() + size_t(omp_get_thread_num()) * H2;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < B; r++) {
          const float* p = pre + r * n;
          for (int64_t j = 0; j < n; j++) {
            float v = bias ? p[j] + bias[j] : p[j];
            if (!(v > 0.0f)) continue;
            uint32_t key = float_key(v);
            if (!second)
              h[(key >> 16) & 0x7fffu]++;
            else if ((key & 0xffff0000u) == want)
              h[key & 0xffffu]++;
          }
        }
      }
      std::vector<int64_t> tot(second ? H2 : H1, 0);
      for (int t = 0; t < nt; t++)
        for (size_t b = 0; b < tot.size(); b++) tot[b] += hist[size_t(t) * H2 + b];
      return tot;
    };
    std::vector<int64_t> h1 = pass(false, 0);
    int64_t positive = 0;
    for (int64_t c : h1) positive += c;
    if (positive < kk) return 0.0f;
    int64_t need = kk;
    int64_t hb = int64_t(H1) - 1;
    for (; hb > 0 && h1[size_t(hb)] < need; hb--) need -= h1[size_t(hb)];
    const uint32_t want = 0x80000000u | (uint32_t(hb) << 16);
    std::vector<int64_t> h2 = pass(true, want);
    int64_t lb = int64_t(H2) - 1;
    for (; lb > 0 && h2[size_t(lb)] < need; lb--) need -= h2[size_t(lb)];
    return key_float(want | uint32_t(lb));
  }


  int64_t select_above(const float* pre, const float* bias, float thr, bool inclusive, int64_t B, int64_t n,
                       int32_t* row_ptr, int32_t* idx, float* val, int64_t cap) override {
    std::vector<int32_t> cnt(static_cast<size_t>(B));
    auto keep = [&](float v) { return v > 0.0f && (inclusive ? v >= thr : v > thr); };
#pragma omp parallel for schedule(static) if (B * n > kParMin)
    for (int64_t r = 0; r < B; r++) {
      int32_t c = 0;
      const float* p = pre + r * n;
      for (int64_t j = 0; j < n; j++) c += keep(bias ? p[j] + bias[j] : p[j]);
      cnt[size_t(r)] = c;
    }
    int64_t nnz = 0;
    for (int64_t r = 0; r < B; r++) {
      row_ptr[r] = int32_t(nnz);
      nnz += cnt[size_t(r)];
    }
    row_ptr[B] = int32_t(nnz);
    if (nnz > cap) return nnz;
#pragma omp parallel for schedule(static) if (B * n > kParMin)
    for (int64_t r = 0; r < B; r++) {
      int32_t o = row_ptr[r];
      const float* p = pre + r * n;
      for (int64_t j = 0; j < n; j++) {
        float v = bias ? p[j] + bias[j] : p[j];
        if (keep(v)) {
          idx[o] = int32_t(j);
          val[o] = v;
          o++;
        }
      }
    }
    return nnz;
  }

  void sparse_decode(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* bias,
                     const float* target, Groups groups, float gscale, float* xhat, float* G, float* err, int64_t B,
                     int64_t d) override {
#pragma omp parallel if (row_ptr[B] * d > kParMin)
    {
      std::vector<float> acc(static_cast<size_t>(d));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < B; r++)
        decode_row(row_ptr, idx, val, D, bias, target, groups, gscale, xhat, G, err, r, d, acc.data());
    }
  }

  void sparse_dpre(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* G,
                   Groups groups, float* dpre, int64_t B, int64_t d) override {
#pragma omp parallel for schedule(static) if (row_ptr[B] * d > kParMin)
    for (int64_t r = 0; r < B; r++)
      for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) {
        if (!(val[e] > 0.0f)) {
          dpre[e] = 0.0f;
          continue;
        }
        const float* drow = D + int64_t(idx[e]) * d;
        const float* g = G + (r * groups.n + group_of(groups, idx[e])) * d;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < d; j++) s += drow[j] * g[j];
        dpre[e] = s;
      }
  }

  void sparse_dx(const int32_t* row_ptr, const int32_t* idx, const float* dpre, const float* E, float* dx, int64_t B,
                 int64_t d, bool accumulate) override {
#pragma omp parallel for schedule(static) if (row_ptr[B] * d > kParMin)
    for (int64_t r = 0; r < B; r++) {
      float* o = dx + r * d;
      if (!accumulate) std::memset(o, 0, size_t(d) * 4);
      for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) {
        const float c = dpre[e];
        if (c == 0.0f) continue;
        const float* erow = E + int64_t(idx[e]) * d;
#pragma omp simd
        for (int64_t j = 0; j < d; j++) o[j] += c * erow[j];
      }
    }
  }

  void sparse_transpose(const int32_t* row_ptr, const int32_t* idx, const float* val, int64_t B, int64_t n,
                        int64_t nnz, int32_t* lat_ptr, int32_t* ent, int32_t* ent_row, int32_t* fires) override {
    (void)nnz;
    std::vector<int32_t> count(static_cast<size_t>(n) + 1, 0);
    for (int64_t e = 0; e < row_ptr[B]; e++) count[size_t(idx[e]) + 1]++;
    for (int64_t l = 0; l < n; l++) count[size_t(l) + 1] += count[size_t(l)];
    std::memcpy(lat_ptr, count.data(), (size_t(n) + 1) * 4);
    if (fires) std::memset(fires, 0, size_t(n) * 4);
    for (int64_t r = 0; r < B; r++)
      for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) {
        int32_t l = idx[e];
        int32_t pos = count[size_t(l)]++;
        ent[pos] = e;
        ent_row[pos] = int32_t(r);
        if (fires && val[e] > 0.0f) fires[l]++;
      }
  }

  void sparse_param_grads(const int32_t* lat_ptr, const int32_t* ent, const int32_t* ent_row, const float* val,
                          const float* dpre, const float* G, Groups groups, const float* xc, float* gD, float* gE,
                          float* gb, int64_t n, int64_t d, bool accumulate) override {
#pragma omp parallel for schedule(dynamic, 64) if (lat_ptr[n] * d > kParMin)
    for (int64_t l = 0; l < n; l++) {
      float* gd = gD + l * d;
      float* ge = gE + l * d;
      const int32_t e0 = lat_ptr[l], e1 = lat_ptr[l + 1];
      if (!accumulate) {
        std::memset(gd, 0, size_t(d) * 4);
        std::memset(ge, 0, size_t(d) * 4);
      }
      if (e0 == e1) {
        if (!accumulate) gb[l] = 0.0f;
        continue;
      }
      const int t = group_of(groups, int32_t(l));
      float b = 0;
      for (int32_t p = e0; p < e1; p++) {
        const int32_t e = ent[p];
        const int64_t r = ent_row[p];
        const float v = val[e], c = dpre[e];
        const float* g = G + (r * groups.n + t) * d;
        const float* x = xc + r * d;
#pragma omp simd
        for (int64_t j = 0; j < d; j++) {
          gd[j] += v * g[j];
          ge[j] += c * x[j];
        }
        b += c;
      }
      gb[l] = (accumulate ? gb[l] : 0.0f) + b;
    }
  }

  float min_positive(const float* val, int64_t count) override {
    float m = std::numeric_limits<float>::infinity();
#pragma omp parallel for reduction(min : m) schedule(static) if (count > kParMin)
    for (int64_t i = 0; i < count; i++)
      if (val[i] > 0.0f && val[i] < m) m = val[i];
    return std::isinf(m) ? 0.0f : m;  // min is exact whatever the order
  }

  void relu_fwd(float* pre, const float* bias, float* f, int32_t* fires, float* colsum_f, int64_t B,
                int64_t n) override {
    for_column_chunks(B, n, [&](int64_t c0, int64_t c1) {
      float acc[kColChunk] = {0};
      int32_t cnt[kColChunk] = {0};
      for (int64_t r = 0; r < B; r++) {
        float* p = pre + r * n;
        float* fr = f + r * n;
        for (int64_t j = c0; j < c1; j++) {
          float v = p[j] + (bias ? bias[j] : 0.0f);
          p[j] = v;
          float a = relu(v);
          fr[j] = a;
          acc[j - c0] += a;
          cnt[j - c0] += a > 0.0f;
        }
      }
      for (int64_t j = c0; j < c1; j++) {
        colsum_f[j] = acc[j - c0];
        fires[j] = cnt[j - c0];
      }
    });
  }

  void relu_bwd(const float* df, const float* f, const float* norms, float coef, float* dpre, int64_t B,
                int64_t n) override {
#pragma omp parallel for schedule(static) if (B * n > kParMin)
    for (int64_t r = 0; r < B; r++)
#pragma omp simd
      for (int64_t j = 0; j < n; j++) dpre[r * n + j] = relu_dpre(df[r * n + j], f[r * n + j], norms[j], coef);
  }

  void l1_norm_grad(const float* colsum_f, const float* norms, const float* D, float coef, float* gD, int64_t n,
                    int64_t d) override {
#pragma omp parallel for schedule(static) if (n * d > kParMin)
    for (int64_t i = 0; i < n; i++) {
      if (!(norms[i] > 0.0f)) continue;
      float c = coef * colsum_f[i] / norms[i];
#pragma omp simd
      for (int64_t j = 0; j < d; j++) gD[i * d + j] += c * D[i * d + j];
    }
  }

  void jumprelu_fwd(float* pre, const float* bias, const float* log_thr, float* f, int32_t* fires, int64_t B,
                    int64_t n) override {
    for_column_chunks(B, n, [&](int64_t c0, int64_t c1) {
      float thr[kColChunk];
      int32_t cnt[kColChunk] = {0};
      for (int64_t j = c0; j < c1; j++) thr[j - c0] = std::exp(log_thr[j]);
      for (int64_t r = 0; r < B; r++) {
        float* p = pre + r * n;
        float* fr = f + r * n;
        for (int64_t j = c0; j < c1; j++) {
          float v = p[j] + (bias ? bias[j] : 0.0f);
          p[j] = v;
          float a = jumprelu(v, thr[j - c0]);
          fr[j] = a;
          cnt[j - c0] += v > thr[j - c0];
        }
      }
      for (int64_t j = c0; j < c1; j++) fires[j] = cnt[j - c0];
    });
  }

  void jumprelu_bwd(const float* df, const float* pre, const float* log_thr, const int32_t* fires, float inv_eps,
                    float lambda, float freq_scale, float* dpre, float* g_log_thr, int64_t B, int64_t n) override {
    for_column_chunks(B, n, [&](int64_t c0, int64_t c1) {
      float thr[kColChunk], cf[kColChunk], acc[kColChunk] = {0};
      for (int64_t j = c0; j < c1; j++) {
        thr[j - c0] = std::exp(log_thr[j]);
        cf[j - c0] = l0_coef(float(fires[j]) / float(B), lambda, freq_scale) / float(B);
      }
      for (int64_t r = 0; r < B; r++)
        for (int64_t j = c0; j < c1; j++) {
          float dt;
          dpre[r * n + j] = jumprelu_grad(pre[r * n + j], thr[j - c0], df[r * n + j], inv_eps, cf[j - c0], &dt);
          acc[j - c0] += dt;
        }
      for (int64_t j = c0; j < c1; j++) g_log_thr[j] = thr[j - c0] * acc[j - c0];
    });
  }

  void gated_fwd(const float* base, const float* b_gate, const float* r_mag, const float* b_mag, float* f,
                 float* gate_relu, int32_t* fires, float* gate_sum, int64_t B, int64_t n) override {
    for_column_chunks(B, n, [&](int64_t c0, int64_t c1) {
      int32_t cnt[kColChunk] = {0};
      float gs[kColChunk] = {0};
      for (int64_t r = 0; r < B; r++)
        for (int64_t j = c0; j < c1; j++) {
          GatedFwd o = kern::gated_fwd(base[r * n + j], b_gate[j], r_mag[j], b_mag[j]);
          f[r * n + j] = o.f;
          gate_relu[r * n + j] = o.gate_relu;
          cnt[j - c0] += o.f > 0.0f;
          gs[j - c0] += o.gate_relu;
        }
      for (int64_t j = c0; j < c1; j++) {
        fires[j] = cnt[j - c0];
        gate_sum[j] = gs[j - c0];
      }
    });
  }

  void gated_bwd(const float* base, const float* df, const float* dgr, const float* b_gate, const float* r_mag,
                 const float* b_mag, float l1, float* dbase, float* g_b_gate, float* g_r_mag, float* g_b_mag, int64_t B,
                 int64_t n) override {
    for_column_chunks(B, n, [&](int64_t c0, int64_t c1) {
      float sg[kColChunk] = {0}, sr[kColChunk] = {0}, sm[kColChunk] = {0};
      for (int64_t r = 0; r < B; r++)
        for (int64_t j = c0; j < c1; j++) {
          GatedBwd o = kern::gated_bwd(base[r * n + j], df[r * n + j], dgr[r * n + j], b_gate[j], r_mag[j], b_mag[j], l1);
          dbase[r * n + j] = o.dbase;
          sg[j - c0] += o.dpi_gate;
          sr[j - c0] += o.dr_mag;
          sm[j - c0] += o.dpi_mag;
        }
      for (int64_t j = c0; j < c1; j++) {
        g_b_gate[j] = sg[j - c0];
        g_r_mag[j] = sr[j - c0];
        g_b_mag[j] = sm[j - c0];
      }
    });
  }

  double sumsq(const float* a, int64_t count) override {
    return blocked_sum(count, [&](int64_t i) { return double(a[i]) * a[i]; });
  }
  double sum(const float* a, int64_t count) override {
    return blocked_sum(count, [&](int64_t i) { return double(a[i]); });
  }
  double dot(const float* a, const float* b, int64_t count) override {
    return blocked_sum(count, [&](int64_t i) { return double(a[i]) * b[i]; });
  }

  void adam(float* p, const float* g, float* m, float* v, int64_t count, const AdamStep& s) override {
#pragma omp parallel for simd schedule(static) if (count > kParMin)
    for (int64_t i = 0; i < count; i++) adam_update(&p[i], g[i], &m[i], &v[i], s);
  }

  void remove_parallel(const float* D, float* gD, int64_t n, int64_t d) override {
#pragma omp parallel for schedule(static) if (n * d > kParMin)
    for (int64_t i = 0; i < n; i++) {
      const float* dr = D + i * d;
      float* g = gD + i * d;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < d; j++) s += g[j] * dr[j];
#pragma omp simd
      for (int64_t j = 0; j < d; j++) g[j] -= s * dr[j];
    }
  }

  void normalize_rows(float* D, int64_t n, int64_t d) override {
#pragma omp parallel for schedule(static) if (n * d > kParMin)
    for (int64_t i = 0; i < n; i++) {
      float* dr = D + i * d;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < d; j++) s += dr[j] * dr[j];
      float inv = s > 0.0f ? 1.0f / std::sqrt(s) : 0.0f;
      if (inv == 0.0f) continue;
#pragma omp simd
      for (int64_t j = 0; j < d; j++) dr[j] *= inv;
    }
  }

 private:
  std::unique_ptr<Backend> be_;
};

}  // namespace

std::unique_ptr<SaeOps> make_cpu_ops() { return std::make_unique<CpuOps>(); }

#ifndef SAE_HAVE_CUDA
std::unique_ptr<SaeOps> make_cuda_ops() {
  throw InputError("--device cuda: this build has no CUDA backend (nvcc was not found at build time)");
}
#else
std::unique_ptr<SaeOps> make_cuda_ops_impl();  // sae/ops_cuda.cu
std::unique_ptr<SaeOps> make_cuda_ops() {
  if (cuda_device_count() == 0) throw InputError("--device cuda: no CUDA GPU is available (" + cuda_describe() + ")");
  return make_cuda_ops_impl();
}
#endif

std::unique_ptr<SaeOps> make_ops(Device d) { return d == Device::cuda ? make_cuda_ops() : make_cpu_ops(); }

}  // namespace sae
