// The op set SAE training is written against (DESIGN.md §4): one virtual interface, a CPU
// implementation (OpenMP loops + OpenBLAS through Backend::gemm, lib/sae/ops_cpu.cpp), a CUDA one
// (kernels + cuBLAS, lib/sae/ops_cuda.cu) and a plain single-threaded reference
// (lib/sae/ops_reference.cpp) that the tests and sae-selftest compare the others with. The
// per-element arithmetic of every op lives in lib/sae/kernels.h and is shared by all three.
//
// Every pointer is a device pointer of ops.backend(). Layouts, row-major:
//   x, xc, xhat, g   [B, d]        input rows, centred input, reconstruction, loss gradient
//   pre              [B, n]        encoder pre-activations (n = d_sae)
//   E, D             [n, d]        encoder (W_enc transposed: one row per latent) and decoder rows
// Sparse codes (TopK, BatchTopK, Matryoshka, AuxK) are CSR: row_ptr [B+1], idx/val [nnz], with each
// row's latents in ascending order. Their transpose (latent -> entries) is lat_ptr [n+1] and
// ent/ent_row [nnz]: entry ids (and their rows) sorted by latent, then row, so every per-latent
// gradient is accumulated by one thread in a fixed order and results are deterministic.
#pragma once
#include <cstdint>
#include <memory>

#include "backend/backend.h"
#include "sae/kernels.h"

namespace sae {

using kern::AdamStep;
using kern::Groups;

class SaeOps {
 public:
  virtual ~SaeOps() = default;
  virtual Backend& backend() = 0;
  // "cpu", "cuda" or "reference".
  virtual const char* name() const = 0;

  // ---- dense helpers ----
  // xc[r] = x[r] - b
  virtual void center(const float* x, const float* b, float* xc, int64_t B, int64_t d) = 0;
  // out[r] = v (primes a gemm with beta = 1 to add a bias)
  virtual void set_rows(float* out, const float* v, int64_t B, int64_t n) = 0;
  // out = a - b, elementwise
  virtual void sub(const float* a, const float* b, float* out, int64_t count) = 0;
  // g = scale * (xhat - target); err[r] = sum_j (xhat - target)^2
  virtual void recon_error(const float* xhat, const float* target, float* g, float* err, int64_t B, int64_t d,
                           float scale) = 0;
  // out[c] (+)= alpha * sum_r a[r * lda + c], for c < n
  virtual void col_sum(const float* a, int64_t lda, float* out, int64_t B, int64_t n, float alpha, bool accumulate) = 0;
  // out[i] = ||A[i]||_2
  virtual void row_norms(const float* A, float* out, int64_t n, int64_t d) = 0;

  // ---- TopK family (sparse codes) ----
  // Per row, the k largest of pre[r] + bias (bias may be null) among latents with mask[l] != 0 (mask
  // may be null: all), ties to the lower index; writes row_ptr (= r*k), idx in ascending latent
  // order, val = relu(pre + bias). Every row must have at least k candidates.
  virtual void topk(const float* pre, const float* bias, const uint8_t* mask, int64_t B, int64_t n, int k,
                    int32_t* row_ptr, int32_t* idx, float* val) = 0;
  // The kk-th largest positive value of relu(pre + bias) over the whole batch (0 if fewer than kk
  // are positive). BatchTopK keeps the values above it.
  virtual float batch_kth(const float* pre, const float* bias, int64_t B, int64_t n, int64_t kk) = 0;
  // Entries v = pre + bias with v > 0 and v >= thr (inclusive: BatchTopK keeps its kk-th value) or
  // v > thr (JumpReLU-style inference): CSR with val = v. Returns nnz; writes row_ptr always and
  // idx/val only when nnz <= cap (else call again with room).
  virtual int64_t select_above(const float* pre, const float* bias, float thr, bool inclusive, int64_t B, int64_t n,
                               int32_t* row_ptr, int32_t* idx, float* val, int64_t cap) = 0;
  // xhat[r] = bias + sum_e val[e] D[idx[e]] (bias may be null: 0). With nested groups (Matryoshka),
  // the partial reconstruction xhat_t after each group t (latents below groups.end[t]) gives
  //   err[r * groups.n + t] = ||xhat_t - target[r]||^2,
  //   G[(r * groups.n + t) * d ...] = gscale * sum_{t' >= t} (xhat_t' - target[r]),
  // i.e. G row t is the loss gradient that reaches latents of group t. xhat is the full one.
  virtual void sparse_decode(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D,
                             const float* bias, const float* target, Groups groups, float gscale, float* xhat,
                             float* G, float* err, int64_t B, int64_t d) = 0;
  // dpre[e] = (D[idx[e]] . G[r, group(idx[e])]) * [val[e] > 0]
  virtual void sparse_dpre(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D,
                           const float* G, Groups groups, float* dpre, int64_t B, int64_t d) = 0;
  // dx[r] (+)= sum_e dpre[e] E[idx[e]]
  virtual void sparse_dx(const int32_t* row_ptr, const int32_t* idx, const float* dpre, const float* E, float* dx,
                         int64_t B, int64_t d, bool accumulate) = 0;
  // latent -> entries index; fires[l] = entries of latent l with val > 0 (may be null)
  virtual void sparse_transpose(const int32_t* row_ptr, const int32_t* idx, const float* val, int64_t B, int64_t n,
                                int64_t nnz, int32_t* lat_ptr, int32_t* ent, int32_t* ent_row, int32_t* fires) = 0;
  // Per latent l, over its entries e (row r):
  //   gD[l] (+)= sum val[e] G[r, group(l)];  gE[l] (+)= sum dpre[e] xc[r];  gb[l] (+)= sum dpre[e]
  // Latents without entries get zero rows (or are left alone when accumulating).
  virtual void sparse_param_grads(const int32_t* lat_ptr, const int32_t* ent, const int32_t* ent_row,
                                  const float* val, const float* dpre, const float* G, Groups groups, const float* xc,
                                  float* gD, float* gE, float* gb, int64_t n, int64_t d, bool accumulate) = 0;
  // Smallest positive value (0 if none): BatchTopK's per-batch threshold sample.
  virtual float min_positive(const float* val, int64_t count) = 0;

  // ---- dense architectures ----
  // ReLU: pre += bias; f = relu(pre); fires[i] = #rows with f > 0; colsum_f[i] = sum_r f_ri
  virtual void relu_fwd(float* pre, const float* bias, float* f, int32_t* fires, float* colsum_f, int64_t B,
                        int64_t n) = 0;
  // dpre = kern::relu_dpre(df, f, norms, coef), in place over df allowed
  virtual void relu_bwd(const float* df, const float* f, const float* norms, float coef, float* dpre, int64_t B,
                        int64_t n) = 0;
  // gD[i] += coef * colsum_f[i] / norms[i] * D[i]  (gradient of the norm-weighted L1 against D)
  virtual void l1_norm_grad(const float* colsum_f, const float* norms, const float* D, float coef, float* gD, int64_t n,
                            int64_t d) = 0;
  // JumpReLU: pre += bias; f = jumprelu(pre, exp(log_thr)); fires[i] = #rows above threshold
  virtual void jumprelu_fwd(float* pre, const float* bias, const float* log_thr, float* f, int32_t* fires, int64_t B,
                            int64_t n) = 0;
  // dpre (over df allowed) and g_log_thr[i] = thr_i * sum_r dthr, with the L0/frequency coefficient
  // from fires: c_i = kern::l0_coef(fires_i / B, lambda, freq_scale) / B
  virtual void jumprelu_bwd(const float* df, const float* pre, const float* log_thr, const int32_t* fires,
                            float inv_eps, float lambda, float freq_scale, float* dpre, float* g_log_thr, int64_t B,
                            int64_t n) = 0;
  // Gated forward: f, relu(pi_gate) into gate_relu, fires[i] = #rows with f > 0, gate_sum[i] = sum_r relu(pi_gate)
  virtual void gated_fwd(const float* base, const float* b_gate, const float* r_mag, const float* b_mag, float* f,
                         float* gate_relu, int32_t* fires, float* gate_sum, int64_t B, int64_t n) = 0;
  // Gated backward: dbase (over df allowed) and the per-latent gradients of b_gate, r_mag, b_mag
  virtual void gated_bwd(const float* base, const float* df, const float* dgr, const float* b_gate, const float* r_mag,
                         const float* b_mag, float l1, float* dbase, float* g_b_gate, float* g_r_mag, float* g_b_mag,
                         int64_t B, int64_t n) = 0;

  // ---- optimiser and decoder constraint ----
  // sum of squares, sum and dot product, accumulated in double in a fixed order
  virtual double sumsq(const float* a, int64_t count) = 0;
  virtual double sum(const float* a, int64_t count) = 0;
  virtual double dot(const float* a, const float* b, int64_t count) = 0;
  virtual void adam(float* p, const float* g, float* m, float* v, int64_t count, const AdamStep& s) = 0;
  // gD[i] -= (gD[i] . D[i]) D[i]  (D rows unit norm: the step stays tangent to the sphere)
  virtual void remove_parallel(const float* D, float* gD, int64_t n, int64_t d) = 0;
  // D[i] /= ||D[i]||
  virtual void normalize_rows(float* D, int64_t n, int64_t d) = 0;
};

// The CPU op set on a CPU backend (OpenMP + OpenBLAS).
std::unique_ptr<SaeOps> make_cpu_ops();
// The plain reference: single-threaded loops and a naive gemm accumulating in double.
std::unique_ptr<SaeOps> make_reference_ops();
// The CUDA op set (throws InputError when this build or machine has no CUDA).
std::unique_ptr<SaeOps> make_cuda_ops();
std::unique_ptr<SaeOps> make_ops(Device d);

}  // namespace sae
