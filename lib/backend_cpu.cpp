#include <cblas.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "backend.h"
#include "common.h"

namespace sae {

namespace {
class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  void* alloc_bytes(size_t bytes) override {
    void* p = nullptr;
    // 64-byte alignment for AVX-512 loads.
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) throw std::bad_alloc();
    return p;
  }
  void free_bytes(void* p) override { std::free(p); }
  void to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
                int(k), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  }
};
}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace sae
