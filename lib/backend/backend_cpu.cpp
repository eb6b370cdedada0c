#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "base/dtype.h"
#include "base/build_info.h"
#include "base/errors.h"

// OpenBLAS built with DYNAMIC_ARCH picks its kernels at load time by CPU model. Debian 12's
// OpenBLAS 0.3.21 does not know CPUs newer than Sapphire Rapids (e.g. Emerald Rapids) and falls
// back to its Prescott (SSE3) kernels, 3-5x slower at sgemm than its AVX-512 ones. These entry
// points (weak: absent from other BLAS builds) let us redo the choice once.
extern "C" {
__attribute__((weak)) char* openblas_get_corename(void);
__attribute__((weak)) char* openblas_get_config(void);
__attribute__((weak)) void gotoblas_dynamic_init(void);
__attribute__((weak)) void gotoblas_dynamic_quit(void);
}

namespace sae {

namespace {

// The kernel set OpenBLAS chose at load time, when fix_openblas_kernels replaced it ("" if not).
std::string g_openblas_replaced;

// When the user has not chosen (OPENBLAS_CORETYPE) and OpenBLAS settled on a legacy kernel set on
// a CPU with AVX-512 or AVX2, select the matching kernels: SkylakeX (AVX-512 F/BW/VL/DQ) or
// Haswell (AVX2 + FMA). Runs before this process's first BLAS call.
void fix_openblas_kernels() {
  if (!openblas_get_corename || !gotoblas_dynamic_init || !gotoblas_dynamic_quit) return;
  if (std::getenv("OPENBLAS_CORETYPE")) return;
  const std::string core = openblas_get_corename();
  if (core != "Prescott" && core != "Core2" && core != "Penryn" && core != "Dunnington" && core != "Nehalem" &&
      core != "Atom" && core != "Sandybridge")
    return;
  const char* want = nullptr;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    want = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    want = "Haswell";
  if (!want) return;
  g_openblas_replaced = core;
  setenv("OPENBLAS_CORETYPE", want, 0);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
}

// Once per process, before this process's first BLAS call: make_cpu_backend and host_sgemm call it.
void tune_cpu_blas() {
  static std::once_flag once;
  std::call_once(once, fix_openblas_kernels);
}

// For --version: the kernel set this process uses, and OpenBLAS's own build description.
std::string describe_openblas() {
  if (!openblas_get_corename) return "not OpenBLAS (this BLAS has no openblas_get_corename)";
  tune_cpu_blas();
  std::string r = std::string("kernel set ") + openblas_get_corename();
  if (std::getenv("OPENBLAS_CORETYPE") && g_openblas_replaced.empty()) r += " (OPENBLAS_CORETYPE)";
  if (!g_openblas_replaced.empty()) r += " (OpenBLAS chose " + g_openblas_replaced + "; saetools replaced it for this CPU)";
  if (openblas_get_config) r += std::string("; ") + openblas_get_config();
  return r;
}
const bool g_openblas_fact = build_info::add_runtime_fact("OpenBLAS", describe_openblas);

class CpuBackend final : public HostBackend {
 public:
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    host_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void gemv(bool trans, int64_t m, int64_t n, float alpha, const float* A, int64_t lda, const float* x, float beta,
            float* y) override {
    tune_cpu_blas();
    // beta 0 must not read y (as in sgemm); sgemv scales it, and 0 * NaN is NaN.
    if (beta == 0.0f) std::fill_n(y, trans ? n : m, 0.0f);
    cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, int(m), int(n), alpha, A, int(lda), x, 1, beta, y, 1);
  }
};
}  // namespace

void host_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  tune_cpu_blas();
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void Backend::gemm_bf16(bool, bool, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*, int64_t, float,
                        float*, int64_t) {
  throw std::logic_error("this backend has no bf16 GEMM");
}

void* HostBackend::alloc_bytes(size_t bytes) {
  void* p = nullptr;
  // 64-byte alignment for AVX-512 loads.
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) throw std::bad_alloc();
  return p;
}
void HostBackend::free_bytes(void* p) { std::free(p); }
void HostBackend::to_device(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void HostBackend::to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void HostBackend::copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void HostBackend::zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }

void HostBackend::gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* A,
                            int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // The stored extent of each operand: (rows - 1) * ld + cols elements, rows and cols of the stored
  // (untransposed) matrix.
  auto widen = [](const uint16_t* p, int64_t rows, int64_t cols, int64_t ld) {
    std::vector<float> f(rows > 0 ? size_t((rows - 1) * ld + cols) : 0);
    decode_f32(DType::bf16, p, f.size(), f.data());
    return f;
  };
  const std::vector<float> a = widen(A, ta ? k : m, ta ? m : k, lda), b = widen(B, tb ? n : k, tb ? k : n, ldb);
  gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, C, ldc);
}

std::unique_ptr<Backend> make_cpu_backend() {
  tune_cpu_blas();
  return std::make_unique<CpuBackend>();
}

}  // namespace sae
