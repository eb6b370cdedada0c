// Benchmark of sae-eval's work: SaeEvaluator::add (encode, reconstruct, accumulate) and the
// blocked decoder geometry, each against the one sgemm that bounds it from below (the encoder
// product x W_enc, the Gram product W_dec W_decᵀ) and against a plain reference (dense decode with
// sgemm, then the metric sums). Prints ratios measured in one run; absolute times on a shared
// machine are noise. Times are process CPU seconds (all threads), which a loaded machine disturbs
// far less than wall time; run with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 for the cleanest
// ratios.
//
//   build/bench/eval [rows] [d_in] [d_sae] [k]

#include <time.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "eval/metrics.h"
#include "sae/sae.h"

#include "bench_util.h"

using namespace sae;
using bench::randn;
using bench::seconds_since;
namespace {

double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

Sae random_sae(const std::string& arch, int64_t d_in, int64_t d_sae, int k) {
  Sae s;
  s.arch = arch;
  s.d_in = d_in;
  s.d_sae = d_sae;
  s.k = k;
  s.W_enc = randn(size_t(d_in * d_sae), 1, 1.0f / std::sqrt(float(d_in)));
  s.W_dec = randn(size_t(d_sae * d_in), 2, 1.0f / std::sqrt(float(d_in)));
  s.b_dec.assign(size_t(d_in), 0.0f);
  // A negative bias keeps a ReLU SAE about as sparse as trained ones (a few % of latents active).
  s.b_enc.assign(size_t(d_sae), arch == "standard" ? -2.0f : 0.0f);
  s.validate("bench");
  return s;
}

// Best of `reps` runs: on a loaded machine the fastest run is the least disturbed one.
template <class F>
double best_of(int reps, F f) {
  double best = 1e30;
  for (int i = 0; i < reps; i++) {
    double t = cpu_seconds();
    f();
    best = std::min(best, cpu_seconds() - t);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? atoll(argv[1]) : 8192;
  const int64_t d_in = argc > 2 ? atoll(argv[2]) : 512;
  const int64_t d_sae = argc > 3 ? atoll(argv[3]) : 8192;
  const int k = argc > 4 ? atoi(argv[4]) : 32;
  printf("eval bench: %lld rows, d_in %lld, d_sae %lld, k %d\n", (long long)rows, (long long)d_in,
         (long long)d_sae, k);
  std::vector<float> x = randn(size_t(rows * d_in), 3, 1.0f);

  // The irreducible cost: the encoder product for these rows, in chunks as the evaluator does.
  Sae topk = random_sae("topk", d_in, d_sae, k);
  SaeEvaluator probe(topk);
  const int64_t chunk = probe.chunk_rows();
  std::vector<float> c(size_t(chunk * d_sae));
  double t_gemm = best_of(3, [&] {
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      int64_t n = std::min(chunk, rows - r0);
      host_sgemm(false, false, n, d_sae, d_in, 1.0f, x.data() + r0 * d_in, d_in, topk.W_enc.data(), d_sae, 0.0f,
                 c.data(), d_sae);
    }
  });
  double gflops = 2.0 * double(rows) * double(d_in) * double(d_sae) / t_gemm / 1e9;
  printf("  encoder sgemm alone:            %8.3f s  (%.1f GFLOP per CPU second: the sgemm rate here)\n", t_gemm, gflops);

  for (const char* arch : {"topk", "standard"}) {
    Sae s = random_sae(arch, d_in, d_sae, k);
    EvalResult res;
    double t_eval = best_of(3, [&] {
      SaeEvaluator ev(s);
      ev.add(x.data(), rows);
      res = ev.result();
    });
    // Plain reference: encode, dense decode with sgemm, then the same accumulation.
    double t_ref = best_of(3, [&] {
      SaeEvaluator ev(s);
      std::vector<float> f(size_t(chunk * d_sae)), xh(size_t(chunk * d_in));
      for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t n = std::min(chunk, rows - r0);
        s.encode(x.data() + r0 * d_in, n, f.data());
        s.decode(f.data(), n, xh.data());
        ev.accumulate(x.data() + r0 * d_in, f.data(), xh.data(), n);
      }
    });
    printf("  %-8s evaluator:              %8.3f s  %9.0f rows/s  L0 %.1f  encoder sgemm = %2.0f%% of the time;"
           " %.2fx faster than dense-decode reference (%.3f s)\n",
           arch, t_eval, double(rows) / t_eval, res.l0_mean, 100 * t_gemm / t_eval, t_ref / t_eval, t_ref);
  }

  // Decoder geometry: blocked max-cosine against one full W_dec W_decᵀ product.
  auto be = make_cpu_backend();
  std::vector<float> gram;
  double t_full = -1;
  if (d_sae <= 16384) {
    gram.resize(size_t(d_sae * d_sae));
    t_full = best_of(2, [&] {
      host_sgemm(false, true, d_sae, d_sae, d_in, 1.0f, topk.W_dec.data(), d_in, topk.W_dec.data(), d_in, 0.0f,
                 gram.data(), d_sae);
    });
    gram.clear();
    gram.shrink_to_fit();
  }
  double t_geo = best_of(2, [&] { decoder_geometry(topk, *be); });
  if (t_full > 0)
    printf("  decoder geometry (blocked):     %8.3f s  = %.2fx the full %lldx%lld Gram sgemm (%.3f s, %.0f MB that"
           " the blocked pass never holds)\n",
           t_geo, t_geo / t_full, (long long)d_sae, (long long)d_sae, t_full, double(d_sae) * double(d_sae) * 4 / 1e6);
  else
    printf("  decoder geometry (blocked):     %8.3f s\n", t_geo);
  return 0;
}
