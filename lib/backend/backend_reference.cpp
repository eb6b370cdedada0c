// The plain reference backend: host memory and a naive triple-loop gemm that sums in double, on
// one thread. It is the simplest correct version of the arithmetic; the reference SAE op set
// (sae/ops_reference.cpp) runs on it, and sae-selftest --device cpu and the unit tests check
// OpenBLAS's products against it.
#include "backend/backend.h"

namespace sae {

namespace {

class RefBackend final : public HostBackend {
 public:
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
            const float* Bm, int64_t ldb, float beta, float* C, int64_t ldc) override {
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int64_t p = 0; p < k; p++) {
          double a = ta ? A[p * lda + i] : A[i * lda + p];
          double b = tb ? Bm[j * ldb + p] : Bm[p * ldb + j];
          s += a * b;
        }
        float c = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        C[i * ldc + j] = float(alpha * s + c);
      }
  }
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<RefBackend>(); }

}  // namespace sae
