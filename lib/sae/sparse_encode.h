// Sparse inference encoding: dense activation rows in, the SAE's active latents out (count, index,
// value per row, the layout of a latents stream's Batch), with each architecture's own activation
// rule exactly as Sae::encode applies it (normalize_activations and apply_b_dec_to_input included).
// The result is Sae::encode followed by keeping the nonzeros, with the same expressions; the one
// difference is the rounding of the product: OpenBLAS chooses its kernels by the shape of a call,
// and Sae::encode makes one call over all its rows where this encoder makes fixed-shape calls, so
// sums may differ in the last bit (and a latent within that of its threshold, or of a TopK tie, may
// then differ). Where the products are exact the two are equal bit for bit (the unit tests use such
// inputs). For the same reason a row's result can depend on its place in the call (the blocks of
// block_rows() rows from the call's first row), but never on the number of threads.
//
// It is one GEMM plus a selection, and never holds more than a block of rows' dense
// pre-activations:
//  - CPU: the blocks of block_rows() rows are shared among the threads; for each block, a thread
//    runs Sae::encoder_input, the bias, one single-threaded sgemm, then the selection of each row:
//    the rule of lib/sae/kernels.h, or for TopK a one-pass partial selection of the k largest (ties
//    to the lower index). One set of threads does both the products and the selections.
//  - CUDA: the product on the device through the Backend (cuBLAS), the rule or the top-k radix
//    selection and the compaction as kernels (sparse_encode_cuda.cu) calling the same kernels.h
//    functions; the run-time normalisation and b_dec are applied on the host.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "sae/sae.h"

namespace sae {

// Encodes dense activation rows into sparse latent rows with the SAE's own activation rule.
class SparseEncoder {
 public:
  // device: Device::cpu or Device::cuda (backend/backend.h). threads: CPU threads, 0 = all cores.
  // The SAE must outlive the encoder (its weights are read at each call on the CPU).
  SparseEncoder(const Sae& sae, Device device, int threads = 0);
  ~SparseEncoder();
  SparseEncoder(const SparseEncoder&) = delete;
  SparseEncoder& operator=(const SparseEncoder&) = delete;
  // Encodes `rows` rows of x (rows x d_in, f32, host memory). Replaces count (rows entries), index and
  // value (nnz entries, ascending latent index within each row) — the layout of Batch::count/index/value.
  // On the CPU with OpenBLAS, OpenBLAS's thread count is 1 for the duration of the call (each of the
  // encoder's threads runs its own products), then restored.
  void encode(const float* x, int64_t rows, std::vector<uint32_t>& count, std::vector<uint32_t>& index,
              std::vector<float>& value);

  // Rows whose dense pre-activations are held at once (per thread on the CPU), for this SAE.
  int64_t block_rows() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sae
