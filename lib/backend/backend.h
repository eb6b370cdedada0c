// The compute backends behind one small interface: memory, copies and a row-major sgemm.
// CPU: OpenBLAS + OpenMP (always built, backend_cpu.cpp). CUDA: cuBLAS (built when nvcc is present,
// backend_cuda.cu).
// Domain op sets (SAE training ops, transformer ops) extend this pattern: a virtual interface
// with a CPU and a CUDA implementation whose per-element bodies are shared SAE_HD functions
// in the area's kernels.h (sae/kernels.h, model/kernels.h), so the CPU tests check the arithmetic
// the GPU runs. The plain reference backend (backend_reference.cpp) sums in double, on one thread.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sae {

enum class Device { cpu, cuda };

const char* device_name(Device d);
// "cpu", "cuda" or "auto" (cuda when this build has CUDA and a GPU is present). Asking for cuda
// where there is none is an InputError (exit 1) that says why.
Device resolve_device(const std::string& option);
// True when this build includes the CUDA backend.
bool cuda_compiled();
// Number of usable CUDA devices (0 when not compiled in or no driver/GPU).
int cuda_device_count();
// One line describing the GPU (name, memory, compute capability) or why there is none.
std::string cuda_describe();

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual void* alloc_bytes(size_t bytes) = 0;
  virtual void free_bytes(void* p) = 0;
  virtual void to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // device to device
  virtual void zero(void* dst, size_t bytes) = 0;
  // Row-major C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, with leading dimensions in
  // elements of the stored (untransposed) matrices.
  virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) = 0;
  // y = alpha * op(A) x + beta * y for a row-major A [m, n] (lda): op(A) x has m entries, or n
  // with trans (A^T x). One row through a matrix, as batch-1 decoding multiplies: the CPU backend
  // runs it as OpenBLAS sgemv, at memory speed, where sgemm with one row reaches about half of
  // it; the others run it as a one-row gemm. beta 0 does not read y.
  virtual void gemv(bool trans, int64_t m, int64_t n, float alpha, const float* A, int64_t lda, const float* x,
                    float beta, float* y) {
    if (trans) gemm(false, false, 1, n, m, alpha, x, m, A, lda, beta, y, n);
    else gemm(false, true, 1, m, n, alpha, x, n, A, lda, beta, y, m);
  }
  // The same with A and B in bf16 (raw bits, lib/base/dtype.h) and C in f32: each product of two bf16
  // values is exact in f32 and the sum accumulates in f32 (CUDA: cublasGemmEx, CUBLAS_COMPUTE_32F;
  // host: A and B widened to f32, then gemm). The transformer's bf16 compute mode uses it; a
  // backend without it (a wrapper that only times sgemm) throws an internal error.
  virtual void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* A,
                         int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
  virtual void sync() {}
};

// Host memory for the CPU backends (the OpenBLAS one and the plain reference): 64-byte aligned
// allocations and memcpy/memset copies, and gemm_bf16 as bf16 inputs widened exactly to f32 and
// passed to gemm (so the bf16 products are exact and the subclass's gemm does the f32 sums).
// Subclasses provide gemm.
class HostBackend : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  void* alloc_bytes(size_t bytes) override;
  void free_bytes(void* p) override;
  void to_device(void* dst, const void* src, size_t bytes) override;
  void to_host(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* A,
                 int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) override;
};

std::unique_ptr<Backend> make_backend(Device d);
std::unique_ptr<Backend> make_cpu_backend();
// The CPU backend's gemm on plain host arrays, for host-side code that has no Backend (Sae::encode
// and decode). It is the one place OpenBLAS's sgemm is called, so every product runs on the
// kernels this CPU supports (backend_cpu.cpp corrects OpenBLAS's choice once, before the first
// call).
void host_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// The plain reference (backend_reference.cpp): host memory, a naive gemm summing in double, one
// thread. What the fast CPU products are checked against.
std::unique_ptr<Backend> make_reference_backend();
std::unique_ptr<Backend> make_cuda_backend();  // throws InputError when unavailable

// A typed buffer owned by a backend.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& be, size_t n) : be_(&be), n_(n), p_(n ? static_cast<T*>(be.alloc_bytes(n * sizeof(T))) : nullptr) {}
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept : be_(o.be_), n_(o.n_), p_(o.p_) { o.p_ = nullptr; o.n_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_; n_ = o.n_; p_ = o.p_;
      o.p_ = nullptr; o.n_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void reset() {
    if (p_) be_->free_bytes(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  void upload(const T* src, size_t n) { be_->to_device(p_, src, n * sizeof(T)); }
  void upload(const std::vector<T>& v) { upload(v.data(), v.size()); }
  void download(T* dst, size_t n) const { be_->to_host(dst, p_, n * sizeof(T)); }
  std::vector<T> to_vector() const {
    std::vector<T> v(n_);
    download(v.data(), n_);
    return v;
  }
  void zero() { be_->zero(p_, n_ * sizeof(T)); }

 private:
  Backend* be_ = nullptr;
  size_t n_ = 0;
  T* p_ = nullptr;
};

}  // namespace sae
