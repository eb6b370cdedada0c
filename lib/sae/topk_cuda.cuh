// The top-k of one row on the GPU, by one thread block: shared by the training op set
// (ops_cuda.cu, k_topk) and the sparse inference encoder (sparse_encode_cuda.cu), so that both
// select exactly the CPU's set: the k largest values, ties to the lower index (kernels.h's
// float_key gives the order).
//
// Radix selection finds the key of the k-th largest value 8 bits at a time from the top (a
// 256-bin histogram in shared memory per pass), then one pass in index order keeps the keys above
// it and the first `need` equal to it. No floating-point atomics: the result depends only on the
// values.
#pragma once
#include <cub/cub.cuh>

#include "sae/kernels.h"

namespace sae {

// Called by every thread of a block of kBlock threads. value(l) is the row's value at l (for l < n
// with allowed(l)); emit(out, l, v) is called once for each selected l, with `out` its rank in
// index order among the selected (0, 1, ...), when keep(v). Returns the number emitted (to every
// thread).
template <int kBlock, class Value, class Allowed, class Keep, class Emit>
__device__ int block_topk(int64_t n, int k, Value value, Allowed allowed, Keep keep, Emit emit) {
  using Scan = cub::BlockScan<int, kBlock>;
  __shared__ int hist[256];
  __shared__ uint32_t s_prefix, s_pmask;
  __shared__ int s_need, s_out, s_eq_taken;
  __shared__ typename Scan::TempStorage scan;
  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_pmask = 0;
    s_need = k;
  }
  __syncthreads();
  // The key of the k-th largest value, 8 bits at a time from the top.
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    const uint32_t prefix = s_prefix, pm = s_pmask;
    for (int64_t l = threadIdx.x; l < n; l += blockDim.x) {
      if (!allowed(l)) continue;
      const uint32_t key = kern::float_key(value(l));
      if ((key & pm) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int need = s_need, b = 255;
      for (; b > 0 && hist[b] < need; b--) need -= hist[b];
      s_need = need;  // how many of the keys equal to the final prefix to take
      s_prefix = prefix | (uint32_t(b) << shift);
      s_pmask = pm | (255u << shift);
    }
    __syncthreads();
  }
  const uint32_t kth = s_prefix;
  const int need_eq = s_need;
  if (threadIdx.x == 0) {
    s_out = 0;
    s_eq_taken = 0;
  }
  __syncthreads();
  // Keep keys above the k-th, and the first need_eq equal to it (lowest indices), in index order.
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t l = base + threadIdx.x;
    float v = 0;
    uint32_t key = 0;
    const bool ok = l < n && allowed(l);
    if (ok) {
      v = value(l);
      key = kern::float_key(v);
    }
    int eq = ok && key == kth, eq_rank, eq_total;
    Scan(scan).ExclusiveSum(eq, eq_rank, eq_total);
    __syncthreads();
    int sel = ((ok && key > kth) || (eq && s_eq_taken + eq_rank < need_eq)) && keep(v);
    int pos, total;
    Scan(scan).ExclusiveSum(sel, pos, total);
    if (sel) emit(s_out + pos, l, v);
    __syncthreads();
    if (threadIdx.x == 0) {
      s_out += total;
      s_eq_taken += eq_total;
    }
    __syncthreads();
  }
  return s_out;
}

}  // namespace sae
