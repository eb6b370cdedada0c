// The OpenBLAS backend's gemv (batch-1 decoding runs every projection through it) against the
// plain reference backend's, which is a one-row gemm summed in float64: both ways, with a padded
// leading dimension, and beta 0, which must not read y (sgemv would scale a NaN there).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"

using namespace sae;

TEST(CpuBackend, GemvMatchesTheReference) {
  auto cpu = make_cpu_backend(), ref = make_reference_backend();
  std::mt19937 g(4);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto randn = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = nd(g);
    return v;
  };
  for (int trans = 0; trans < 2; trans++)
    for (float beta : {0.0f, 0.3f}) {
      const int64_t m = 29, n = 47, lda = 50;
      const std::vector<float> A = randn(size_t(m * lda)), x = randn(size_t(trans ? m : n));
      std::vector<float> y0 = randn(size_t(trans ? n : m));
      if (beta == 0.0f) y0.assign(y0.size(), NAN);  // never read
      std::vector<float> a = y0, b = y0;
      cpu->gemv(trans, m, n, 0.7f, A.data(), lda, x.data(), beta, a.data());
      ref->gemv(trans, m, n, 0.7f, A.data(), lda, x.data(), beta, b.data());
      for (size_t i = 0; i < a.size(); i++) {
        double want = beta * double(y0[i] == y0[i] ? y0[i] : 0.0f);
        for (int64_t j = 0; j < (trans ? m : n); j++)
          want += 0.7 * double(trans ? A[size_t(j * lda) + i] : A[i * size_t(lda) + size_t(j)]) * x[size_t(j)];
        ASSERT_NEAR(b[i], want, 1e-5 * (1 + std::fabs(want))) << "reference, trans " << trans;
        ASSERT_NEAR(a[i], want, 1e-5 * (1 + std::fabs(want))) << "trans " << trans << " beta " << beta;
      }
    }
}
