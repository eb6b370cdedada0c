// CUDA backend: device memory, copies, and cuBLAS sgemm (and bf16 GemmEx) in row-major terms.
#include <cstdio>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "backend/cuda_check.h"

namespace sae {

namespace {
class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    SAE_CUBLAS_CHECK(cublasCreate(&handle_));
    // Plain fp32 products by default so CUDA and CPU results agree to fp32 rounding.
    SAE_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  }
  ~CudaBackend() override { cublasDestroy(handle_); }
  Device device() const override { return Device::cuda; }
  void* alloc_bytes(size_t bytes) override {
    void* p = nullptr;
    SAE_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 256));
    return p;
  }
  void free_bytes(void* p) override { cudaFree(p); }
  void to_device(void* dst, const void* src, size_t bytes) override {
    SAE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    SAE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    SAE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
  }
  void zero(void* dst, size_t bytes) override { SAE_CUDA_CHECK(cudaMemset(dst, 0, bytes)); }
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
    SAE_CUBLAS_CHECK(cublasSgemm(handle_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(n),
                                 int(m), int(k), &alpha, B, int(ldb), A, int(lda), &beta, C, int(ldc)));
  }
  void gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* A, int64_t lda,
                 const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    // bf16 inputs, f32 output, f32 accumulation (CUBLAS_COMPUTE_32F; never a reduced-precision
    // compute type), operands swapped for row-major as in gemm.
    SAE_CUBLAS_CHECK(cublasGemmEx(handle_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(n), int(m),
                                  int(k), &alpha, B, CUDA_R_16BF, int(ldb), A, CUDA_R_16BF, int(lda), &beta, C,
                                  CUDA_R_32F, int(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  void sync() override { SAE_CUDA_CHECK(cudaDeviceSynchronize()); }

 private:
  cublasHandle_t handle_ = nullptr;
};
}  // namespace

int cuda_device_count_impl() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error from a missing driver
    return 0;
  }
  return n;
}

std::string cuda_describe_impl() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("CUDA runtime: ") + cudaGetErrorString(e);
  }
  if (n == 0) return "no CUDA devices";
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  char buf[256];
  snprintf(buf, sizeof buf, "%s, %.1f GiB, compute capability %d.%d", p.name, p.totalGlobalMem / 1073741824.0, p.major,
           p.minor);
  return buf;
}

std::unique_ptr<Backend> make_cuda_backend_impl() { return std::make_unique<CudaBackend>(); }

}  // namespace sae
