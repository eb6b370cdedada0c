// The CUDA kernels of SparseEncoder (sparse_encode_cuda.cu), launched on device pointers. Only
// sparse_encode.cpp calls them, and only in builds with CUDA (SAE_HAVE_CUDA).
#pragma once
#include <cstdint>

#include "sae/kernels.h"

namespace sae::encode_cuda {

// out[r * n + j] = v[j] for every row r < rows.
void fill_rows(float* out, const float* v, int64_t rows, int64_t n);

// Per row of pre (rows x d_sae): the active latents in ascending order into the row's slot of
// slot_idx/slot_val (width `slot` entries per row: k for topk, d_sae otherwise) and their number
// into count[r]. rule topk selects the k largest pre-activations (ties to the lower index) and
// keeps the positive ones; the other rules apply kern::encode_rule. Parameters a rule does not
// use may be null.
void select_rows(kern::EncodeRule rule, int k, const float* pre, int64_t rows, int64_t d_sae, const float* threshold,
                 const float* b_gate, const float* mag_scale, const float* b_mag, int64_t slot, uint32_t* slot_idx,
                 float* slot_val, uint32_t* count);

// Packs the rows' slots one after another: row r's count[r] entries to offset[r].
void gather_rows(const uint32_t* slot_idx, const float* slot_val, int64_t slot, const uint32_t* count,
                 const uint64_t* offset, int64_t rows, uint32_t* idx, float* val);

}  // namespace sae::encode_cuda
