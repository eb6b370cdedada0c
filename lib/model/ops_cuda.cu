// CUDA transformer ops: the CPU ops of lib/model/ops_cpu.cpp as kernels, with the per-element
// arithmetic taken from lib/model/kernels.h. Row reductions run one thread block per
// row: each thread reduces its strided share with the shared partial_* functions, then the block
// combines the partial results. Everything runs on the default stream, in order with cuBLAS.
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include "backend/cuda_check.h"
#include "model/kernels.h"
#include "model/ops.h"

namespace sae {

namespace {

constexpr int kThreads = 256;

// Grid size for a grid-stride loop over n elements (capped: each thread then takes several).
unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < (int64_t(1) << 20) ? (b > 0 ? b : 1) : (int64_t(1) << 20));
}

void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA kernel ") + what + ": " + cudaGetErrorString(e));
}

// Sum (or max) over the block; every thread gets the result. scratch holds 32 floats.
__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = tk::max_f32(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = tk::max_f32(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// T: float (f32 compute) or uint16_t (a bf16 table, bf16 compute).
template <class T>
__global__ void embed_kernel(const int32_t* tokens, const int32_t* positions, int64_t rows, const T* wte, const float* wpe,
                             int64_t d, float scale, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * d; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / d, c = i % d;
    out[i] = tk::embed_elem(wte[int64_t(tokens[r]) * d + c], scale, wpe ? wpe[int64_t(positions[r]) * d + c] : 0.0f);
  }
}

__global__ void to_bf16_kernel(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = f32_to_bf16(x[i]);
}

__global__ void layernorm_kernel(const float* x, const float* w, const float* b, float* y, int64_t d, float eps) {
  __shared__ float scratch[32];
  const float* xr = x + blockIdx.x * d;
  float* yr = y + blockIdx.x * d;
  const float mean = block_sum(tk::partial_sum(xr, d, threadIdx.x, blockDim.x), scratch) / float(d);
  const float rstd = tk::layernorm_rstd(block_sum(tk::partial_sq_dev(xr, d, mean, threadIdx.x, blockDim.x), scratch), d, eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = tk::layernorm_elem(xr[i], mean, rstd, w[i], b[i]);
}

// y = RMSNorm(x) * w over one row of d values, by the whole block; y may be x (block_sum's
// barriers put every thread's reads for the sum before any write).
__device__ void rmsnorm_block(const float* x, const float* w, float* y, int64_t d, float eps, float* scratch) {
  const float rstd = tk::rmsnorm_rstd(block_sum(tk::partial_sum_sq(x, d, threadIdx.x, blockDim.x), scratch), d, eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) y[i] = tk::rmsnorm_elem(x[i], rstd, w[i]);
}

__global__ void rmsnorm_kernel(const float* x, const float* w, float* y, int64_t d, float eps) {
  __shared__ float scratch[32];
  rmsnorm_block(x + blockIdx.x * d, w, y + blockIdx.x * d, d, eps, scratch);
}

// One block per (row, head): blockIdx.x = row * (n_heads + n_kv) + head, over the q and k heads.
__global__ void qk_rmsnorm_kernel(float* qkv, int n_heads, int n_kv, int dh, const float* wq, const float* wk, float eps) {
  __shared__ float scratch[32];
  const int heads = n_heads + n_kv;
  const int64_t r = blockIdx.x / heads;
  const int h = int(blockIdx.x % heads);
  float* x = qkv + r * int64_t(n_heads + 2 * n_kv) * dh + int64_t(h) * dh;
  rmsnorm_block(x, h < n_heads ? wq : wk, x, dh, eps, scratch);  // in place
}

__global__ void add_bias_kernel(float* x, const float* b, int64_t rows, int64_t cols) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * cols; i += int64_t(gridDim.x) * blockDim.x)
    x[i] += b[i % cols];
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) y[i] += x[i];
}

__global__ void bias_act_kernel(float* x, const float* b, int64_t rows, int64_t cols, tk::Activation a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * cols; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = tk::activate(a, b ? x[i] + b[i % cols] : x[i]);
}

__global__ void gated_act_kernel(const float* gu, float* out, int64_t rows, int64_t cols, tk::Activation a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * cols; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    out[i] = tk::gated(a, gu[r * 2 * cols + c], gu[r * 2 * cols + cols + c]);
  }
}

// One thread per (row, rotated head, pair); the first rot dimensions of each head turn.
__global__ void rope_kernel(float* qkv, const int32_t* positions, int64_t rows, int heads, int width_heads, int dh,
                            int rot, const float* cos, const float* sin) {
  const int half = rot / 2;
  const int64_t n = rows * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / (int64_t(heads) * half);
    const int h = int((i / half) % heads), k = int(i % half);
    float* x = qkv + r * int64_t(width_heads) * dh + int64_t(h) * dh;
    const int64_t t = positions[r];
    tk::rope_pair(x + k, x + k + half, cos[t * half + k], sin[t * half + k]);
  }
}

// One block per (query, head, sequence). Dynamic shared memory: the score row (one float per
// slot) and the query (dh floats).
__global__ void attention_kernel(AttentionInput in, float* out, int n_heads, int n_kv, int dh, float scale,
                                 float softcap, int64_t window) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int kvh = h / (n_heads / n_kv);
  const int64_t slots = in.q_pos0 + in.n_q;
  float* s = smem;
  float* q = smem + slots;
  const float* qr = in.q + (b * in.n_q + t) * in.q_stride + int64_t(h) * dh;
  for (int d = threadIdx.x; d < dh; d += blockDim.x) q[d] = qr[d] * scale;
  __syncthreads();
  // Keys lo..p (the sequence's first visible slot, and tk::window_first); the score row is indexed
  // from lo.
  const int64_t p = in.q_pos0 + t, start = in.key_start ? in.key_start[b] : 0;
  const int64_t lo = tk::first_key(start, p, window), n = p + 1 - lo;
  const float* kb = in.k + b * in.kv_batch_stride + int64_t(kvh) * dh;
  const float* vb = in.v + b * in.kv_batch_stride + int64_t(kvh) * dh;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float* k = kb + (lo + j) * in.kv_stride;
    float acc = 0.0f;
    for (int d = 0; d < dh; d++) acc += q[d] * k[d];
    s[j] = softcap > 0.0f ? tk::softcap(acc, softcap) : acc;
  }
  __syncthreads();
  const float m = block_max(tk::partial_max(s, n, threadIdx.x, blockDim.x), scratch);
  float part = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    s[j] = tk::softmax_weight(s[j], m);
    part += s[j];
  }
  const float inv = 1.0f / block_sum(part, scratch);  // block_sum's barriers also publish s[]
  float* o = out + (b * in.n_q + t) * int64_t(n_heads) * dh + int64_t(h) * dh;
  for (int d = threadIdx.x; d < dh; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < n; j++) acc += s[j] * vb[(lo + j) * in.kv_stride + d];
    o[d] = acc * inv;
  }
}

// One thread per value copied: row r's key and value heads to slot slot0 + r % n_new.
__global__ void store_kv_kernel(const float* qkv, int64_t rows, int64_t n_new, int n_heads, int n_kv, int dh, float* k,
                                float* v, int64_t capacity, int64_t slot0) {
  const int64_t width = int64_t(n_heads + 2 * n_kv) * dh, kvw = int64_t(n_kv) * dh;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * kvw; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / kvw, c = i % kvw;
    const int64_t dst = ((r / n_new) * capacity + slot0 + r % n_new) * kvw + c;
    const float* row = qkv + r * width + int64_t(n_heads) * dh;
    k[dst] = row[c];
    v[dst] = row[kvw + c];
  }
}

__global__ void softcap_kernel(float* x, int64_t n, float cap) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = tk::softcap(x[i], cap);
}

__global__ void log_softmax_nll_kernel(float* x, int64_t vocab, const int32_t* target, float* nll, bool log_probs) {
  __shared__ float scratch[32];
  float* xr = x + blockIdx.x * vocab;
  const float m = block_max(tk::partial_max(xr, vocab, threadIdx.x, blockDim.x), scratch);
  const float sum = block_sum(tk::partial_sum_exp(xr, vocab, m, threadIdx.x, blockDim.x), scratch);
  const float lse = m + logf(sum);
  if (threadIdx.x == 0 && nll) nll[blockIdx.x] = target[blockIdx.x] >= 0 ? lse - xr[target[blockIdx.x]] : 0.0f;
  __syncthreads();  // the NLL reads the logit before the log-softmax overwrites it
  if (log_probs)
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) xr[i] -= lse;
}

class CudaTransformerOps final : public TransformerOps {
 public:
  void embed(const int32_t* tokens, const int32_t* positions, int64_t rows, const float* wte, const float* wpe,
             int64_t d, float scale, float* out) override {
    embed_kernel<float><<<blocks_for(rows * d), kThreads>>>(tokens, positions, rows, wte, wpe, d, scale, out);
    check_launch("embed");
  }
  void embed_bf16(const int32_t* tokens, const int32_t* positions, int64_t rows, const uint16_t* wte, const float* wpe,
                  int64_t d, float scale, float* out) override {
    embed_kernel<uint16_t><<<blocks_for(rows * d), kThreads>>>(tokens, positions, rows, wte, wpe, d, scale, out);
    check_launch("embed_bf16");
  }
  void to_bf16(const float* x, uint16_t* y, int64_t n) override {
    to_bf16_kernel<<<blocks_for(n), kThreads>>>(x, y, n);
    check_launch("to_bf16");
  }
  void layernorm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t d, float eps) override {
    layernorm_kernel<<<unsigned(rows), kThreads>>>(x, w, b, y, d, eps);
    check_launch("layernorm");
  }
  void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps) override {
    rmsnorm_kernel<<<unsigned(rows), kThreads>>>(x, w, y, d, eps);
    check_launch("rmsnorm");
  }
  void qk_rmsnorm(float* qkv, int64_t rows, int n_heads, int n_kv, int dh, const float* wq, const float* wk,
                  float eps) override {
    if (rows == 0) return;
    qk_rmsnorm_kernel<<<unsigned(rows * (n_heads + n_kv)), kThreads>>>(qkv, n_heads, n_kv, dh, wq, wk, eps);
    check_launch("qk_rmsnorm");
  }
  void add_bias(float* x, const float* b, int64_t rows, int64_t cols) override {
    add_bias_kernel<<<blocks_for(rows * cols), kThreads>>>(x, b, rows, cols);
    check_launch("add_bias");
  }
  void add(float* y, const float* x, int64_t n) override {
    add_kernel<<<blocks_for(n), kThreads>>>(y, x, n);
    check_launch("add");
  }
  void bias_act(float* x, const float* b, int64_t rows, int64_t cols, tk::Activation a) override {
    bias_act_kernel<<<blocks_for(rows * cols), kThreads>>>(x, b, rows, cols, a);
    check_launch("bias_act");
  }
  void gated_act(const float* gu, float* out, int64_t rows, int64_t cols, tk::Activation a) override {
    gated_act_kernel<<<blocks_for(rows * cols), kThreads>>>(gu, out, rows, cols, a);
    check_launch("gated_act");
  }
  void rope(float* qkv, const int32_t* positions, int64_t rows, int n_heads, int n_kv, int dh, int rot,
            const float* cos, const float* sin) override {
    if (rot == 0) return;
    rope_kernel<<<blocks_for(rows * (n_heads + n_kv) * (rot / 2)), kThreads>>>(qkv, positions, rows, n_heads + n_kv,
                                                                              n_heads + 2 * n_kv, dh, rot, cos, sin);
    check_launch("rope");
  }
  void attend(const AttentionInput& in, float* out, int64_t batch, int n_heads, int n_kv, int dh, float scale,
              float softcap, int64_t window) override {
    const int64_t slots = in.q_pos0 + in.n_q;
    const size_t smem = size_t(slots + dh) * sizeof(float);
    if (smem > 48 * 1024) {
      int dev = 0, most = 0;
      SAE_CUDA_CHECK(cudaGetDevice(&dev));
      SAE_CUDA_CHECK(cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
      if (smem + 32 * sizeof(float) > size_t(most))
        throw std::runtime_error("CUDA attention: a context of " + std::to_string(slots) + " tokens needs more shared memory than this GPU has");
      SAE_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    }
    const dim3 grid{unsigned(in.n_q), unsigned(n_heads), unsigned(batch)};
    attention_kernel<<<grid, 128, smem>>>(in, out, n_heads, n_kv, dh, scale, softcap, window);
    check_launch("attention");
  }
  void store_kv(const float* qkv, int64_t batch, int64_t n_new, int n_heads, int n_kv, int dh, float* k, float* v,
                int64_t capacity, int64_t slot0) override {
    const int64_t n = batch * n_new * n_kv * dh;
    store_kv_kernel<<<blocks_for(n), kThreads>>>(qkv, batch * n_new, n_new, n_heads, n_kv, dh, k, v, capacity, slot0);
    check_launch("store_kv");
  }
  void softcap(float* x, int64_t n, float cap) override {
    softcap_kernel<<<blocks_for(n), kThreads>>>(x, n, cap);
    check_launch("softcap");
  }
  void log_softmax_nll(float* x, int64_t rows, int64_t vocab, const int32_t* target, float* nll,
                       bool log_probs) override {
    log_softmax_nll_kernel<<<unsigned(rows), kThreads>>>(x, vocab, target, nll, log_probs);
    check_launch("log_softmax_nll");
  }
};

}  // namespace

std::unique_ptr<TransformerOps> make_cuda_transformer_ops() { return std::make_unique<CudaTransformerOps>(); }

}  // namespace sae
