// The transformer's non-GEMM operations behind one interface, with a CPU implementation
// (OpenMP loops, lib/model/ops_cpu.cpp) and a CUDA one (kernels, lib/model/ops_cuda.cu). Both
// take their per-element arithmetic from lib/model/kernels.h. Products go through
// Backend::gemm (f32 compute) or Backend::gemm_bf16 (bf16 compute). All pointers are in the
// backend's memory; matrices are row-major, one row per token (row = b * seq + t).
#pragma once
#include <cstdint>
#include <memory>

#include "backend/backend.h"
#include "model/kernels.h"

namespace sae {

// Where attention reads its queries, keys and values, and which keys each query sees. Sequence b
// holds key/value slots 0..q_pos0 + n_q - 1; its n_q queries sit at the last n_q slots. Slot j's key
// heads are at k + b * kv_batch_stride + j * kv_stride (kv head g at + g * dh), its values at the
// same offsets from v; query row r = b * n_q + t has its heads at q + r * q_stride. The plain pass
// reads all three from the packed qkv rows (q_pos0 = 0); the cached one reads keys and values from
// the KV cache (q_pos0 = the positions already cached).
struct AttentionInput {
  const float* q = nullptr;
  int64_t q_stride = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t kv_stride = 0, kv_batch_stride = 0;
  int64_t n_q = 0, q_pos0 = 0;
  // Per sequence, the first slot any of its queries may see (left padding: the pad slots before
  // it are never attended to); null means 0. In the backend's memory.
  const int32_t* key_start = nullptr;
};

class TransformerOps {
 public:
  virtual ~TransformerOps() = default;
  // y[rows, out] = x[rows, in] W, with W stored [in, out], or [out, in] when trans_w: one
  // Backend::gemm over all rows (the CPU version may split the rows among its threads).
  virtual void project(Backend& be, bool trans_w, int64_t rows, int64_t out, int64_t in, const float* x, const float* w,
                       float* y) {
    be.gemm(false, trans_w, rows, out, in, 1.0f, x, in, w, trans_w ? in : out, 0.0f, y, out);
  }
  // bf16 compute: y = bf16(x) W with W in bf16 (laid out as in project) and f32 accumulation
  // (Backend::gemm_bf16); xb is scratch for rows * in bf16 values.
  virtual void project_bf16(Backend& be, bool trans_w, int64_t rows, int64_t out, int64_t in, const float* x,
                            uint16_t* xb, const uint16_t* w, float* y) {
    to_bf16(x, xb, rows * in);
    be.gemm_bf16(false, trans_w, rows, out, in, 1.0f, xb, in, w, trans_w ? in : out, 0.0f, y, out);
  }
  // y[i] = x[i] rounded to bf16, to nearest even (f32_to_bf16 of lib/base/dtype.h).
  virtual void to_bf16(const float* x, uint16_t* y, int64_t n) = 0;
  // out[r] = wte[tokens[r]] * scale (+ wpe[positions[r]] when wpe is given). scale is Gemma's
  // sqrt(d_model), else 1.
  virtual void embed(const int32_t* tokens, const int32_t* positions, int64_t rows, const float* wte, const float* wpe,
                     int64_t d, float scale, float* out) = 0;
  // The same with the token table in bf16 (bf16 compute), widened exactly to f32.
  virtual void embed_bf16(const int32_t* tokens, const int32_t* positions, int64_t rows, const uint16_t* wte,
                          const float* wpe, int64_t d, float scale, float* out) = 0;
  virtual void layernorm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t d,
                         float eps) = 0;
  virtual void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps) = 0;
  // x[r][c] += b[c]
  virtual void add_bias(float* x, const float* b, int64_t rows, int64_t cols) = 0;
  // y[i] += x[i]
  virtual void add(float* y, const float* x, int64_t n) = 0;
  // x[r][c] = act(x[r][c] + b[c]) (b may be null)
  virtual void bias_act(float* x, const float* b, int64_t rows, int64_t cols, tk::Activation a) = 0;
  // gu rows are [gate (cols) | up (cols)]; out[r][c] = act(gate[c]) * up[c]
  virtual void gated_act(const float* gu, float* out, int64_t rows, int64_t cols, tk::Activation a) = 0;
  // Qwen3: RMS-normalises every query head with wq [dh] and every key head with wk [dh], in place
  // in qkv rows [q (n_heads*dh) | k (n_kv*dh) | v], as rmsnorm does a row.
  virtual void qk_rmsnorm(float* qkv, int64_t rows, int n_heads, int n_kv, int dh, const float* wq, const float* wk,
                          float eps) = 0;
  // Rotates the first `rot` dimensions (even, <= dh) of the query and key heads of qkv rows
  // [q (n_heads*dh) | k (n_kv*dh) | v] in place, element i paired with i + rot/2, by the angles of
  // the row's position (positions[r]); the rest pass through. cos/sin hold [position][rot/2].
  virtual void rope(float* qkv, const int32_t* positions, int64_t rows, int n_heads, int n_kv, int dh, int rot,
                    const float* cos, const float* sin) = 0;
  // Causal attention over `in`: the query at slot p = q_pos0 + t of sequence b sees the slots j
  // from tk::first_key(key_start[b], p, window) to p; out[b * n_q + t][h*dh..] =
  // softmax(s) v_{h/group} with s_j = scale * q_h . k_{h/group, j}, each score first soft-capped
  // (tk::softcap) when softcap > 0.
  virtual void attend(const AttentionInput& in, float* out, int64_t batch, int n_heads, int n_kv, int dh, float scale,
                      float softcap, int64_t window) = 0;
  // attend() over packed qkv rows [q (n_heads*dh) | k (n_kv*dh) | v], seq per sequence.
  void attention(const float* qkv, float* out, int64_t batch, int64_t seq, int n_heads, int n_kv, int dh, float scale,
                 float softcap, int64_t window) {
    AttentionInput in;
    const int64_t width = int64_t(n_heads + 2 * n_kv) * dh;
    in.q = qkv;
    in.q_stride = width;
    in.k = qkv + int64_t(n_heads) * dh;
    in.v = qkv + int64_t(n_heads + n_kv) * dh;
    in.kv_stride = width;
    in.kv_batch_stride = seq * width;
    in.n_q = seq;
    attend(in, out, batch, n_heads, n_kv, dh, scale, softcap, window);
  }
  // KV cache: copies the key and value heads of the qkv rows [b * n_new + t] to slots slot0 + t of
  // the caches k and v ([batch][capacity][n_kv*dh]).
  virtual void store_kv(const float* qkv, int64_t batch, int64_t n_new, int n_heads, int n_kv, int dh, float* k,
                        float* v, int64_t capacity, int64_t slot0) = 0;
  // x[i] = tk::softcap(x[i], cap): Gemma 2's final logit soft-capping.
  virtual void softcap(float* x, int64_t n, float cap) = 0;
  // Per row: nll[r] = logsumexp(x[r]) - x[r][target[r]] where target[r] >= 0 (else nll[r] = 0);
  // with log_probs, x[r] becomes its log-softmax.
  virtual void log_softmax_nll(float* x, int64_t rows, int64_t vocab, const int32_t* target, float* nll,
                               bool log_probs) = 0;
};

std::unique_ptr<TransformerOps> make_transformer_ops(Backend& be);
std::unique_ptr<TransformerOps> make_cpu_transformer_ops();
#ifdef SAE_HAVE_CUDA
std::unique_ptr<TransformerOps> make_cuda_transformer_ops();  // lib/model/ops_cuda.cu
#endif

}  // namespace sae
