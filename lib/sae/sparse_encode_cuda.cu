// SparseEncoder's kernels (sae/sparse_encode.h): the activation rule or the top-k selection of each
// row of pre-activations, compacted in ascending latent order, one block per row. The per-element
// arithmetic is kernels.h's (encode_rule, encode_relu, float_key), the same the CPU encoder runs.
// No floating-point atomics: the output depends only on the pre-activations.
#include <cub/cub.cuh>

#include <algorithm>

#include "backend/cuda_check.h"
#include "sae/sparse_encode_cuda.h"
#include "sae/topk_cuda.cuh"

namespace sae::encode_cuda {

namespace {

using namespace kern;

constexpr int kThreads = 256;
constexpr int kMaxGrid = 65535 * 4;
using BlockScanI = cub::BlockScan<int, kThreads>;

inline int grid_for(int64_t n) {
  return int(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxGrid)));
}

__global__ void k_fill_rows(float* out, const float* v, int64_t total, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = v[i % n];
}

// Threshold rules: keep the latents whose value is > 0, in index order (a block scan per chunk).
__global__ void k_select_rule(EncodeRule rule, const float* pre, int64_t n, const float* threshold, const float* b_gate,
                              const float* mag_scale, const float* b_mag, int64_t slot, uint32_t* slot_idx,
                              float* slot_val, uint32_t* count) {
  __shared__ typename BlockScanI::TempStorage scan;
  __shared__ int s_out;
  const int64_t r = blockIdx.x;
  const float* p = pre + r * n;
  if (threadIdx.x == 0) s_out = 0;
  __syncthreads();
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t l = base + threadIdx.x;
    const float v = l < n ? encode_rule(rule, p[l], l, threshold, b_gate, mag_scale, b_mag) : 0.0f;
    int sel = v > 0.0f, pos, total;
    BlockScanI(scan).ExclusiveSum(sel, pos, total);
    if (sel) {
      slot_idx[r * slot + s_out + pos] = uint32_t(l);
      slot_val[r * slot + s_out + pos] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) s_out += total;
    __syncthreads();
  }
  if (threadIdx.x == 0) count[r] = uint32_t(s_out);
}

// TopK: the k largest pre-activations (ties to the lower index, as the CPU's topk_before order), in
// index order, keeping those whose relu is > 0.
__global__ void k_select_topk(const float* pre, int64_t n, int k, int64_t slot, uint32_t* slot_idx, float* slot_val,
                              uint32_t* count) {
  const int64_t r = blockIdx.x;
  const float* p = pre + r * n;
  const int out = block_topk<kThreads>(
      n, k, [&](int64_t l) { return p[l]; }, [](int64_t) { return true; },
      [](float v) { return encode_relu(v) > 0.0f; },
      [&](int o, int64_t l, float v) {
        slot_idx[r * slot + o] = uint32_t(l);
        slot_val[r * slot + o] = encode_relu(v);
      });
  if (threadIdx.x == 0) count[r] = uint32_t(out);
}

__global__ void k_gather_rows(const uint32_t* slot_idx, const float* slot_val, int64_t slot, const uint32_t* count,
                              const uint64_t* offset, uint32_t* idx, float* val) {
  const int64_t r = blockIdx.x;
  const uint32_t c = count[r];
  const uint64_t o = offset[r];
  for (uint32_t i = threadIdx.x; i < c; i += blockDim.x) {
    idx[o + i] = slot_idx[r * slot + i];
    val[o + i] = slot_val[r * slot + i];
  }
}

}  // namespace

void fill_rows(float* out, const float* v, int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  if (total == 0) return;
  k_fill_rows<<<grid_for(total), kThreads>>>(out, v, total, n);
  SAE_CUDA_CHECK(cudaGetLastError());
}

void select_rows(EncodeRule rule, int k, const float* pre, int64_t rows, int64_t d_sae, const float* threshold,
                 const float* b_gate, const float* mag_scale, const float* b_mag, int64_t slot, uint32_t* slot_idx,
                 float* slot_val, uint32_t* count) {
  if (rows == 0) return;
  if (rule == EncodeRule::topk)
    k_select_topk<<<unsigned(rows), kThreads>>>(pre, d_sae, k, slot, slot_idx, slot_val, count);
  else
    k_select_rule<<<unsigned(rows), kThreads>>>(rule, pre, d_sae, threshold, b_gate, mag_scale, b_mag, slot, slot_idx,
                                               slot_val, count);
  SAE_CUDA_CHECK(cudaGetLastError());
}

void gather_rows(const uint32_t* slot_idx, const float* slot_val, int64_t slot, const uint32_t* count,
                 const uint64_t* offset, int64_t rows, uint32_t* idx, float* val) {
  if (rows == 0) return;
  k_gather_rows<<<unsigned(rows), kThreads>>>(slot_idx, slot_val, slot, count, offset, idx, val);
  SAE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace sae::encode_cuda
