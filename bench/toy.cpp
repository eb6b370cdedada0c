// Benchmark of the toy source (sae-collect --toy): rows per second of ToyModel::generate on one
// thread and on all threads, against a plain reference generator (one Bernoulli draw per feature
// per row, std::normal_distribution for the noise), and against the cost of writing the rows as
// a stream. Prints ratios measured in one run; absolute times on a shared machine are noise.
//
//   build/bench/toy [rows] [d] [features] [active]
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <vector>

#include "data/toy.h"
#include "stream/stream.h"

using namespace sae;
using clk = std::chrono::steady_clock;

namespace {

double seconds_since(clk::time_point t) { return std::chrono::duration<double>(clk::now() - t).count(); }

// CPU time of the calling thread: what single-threaded work costs, even on a loaded machine where
// wall time mostly measures the other processes.
double thread_cpu() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// The simplest correct generator of the same model without hierarchy: every feature drawn each
// row, the standard library's normal distribution. It is what the toy source would cost without
// the bucketed geometric sampling and the ziggurat.
void reference_rows(const toy::ToyModel& m, int64_t rows, std::vector<float>& x) {
  const int64_t d = m.d(), n = m.n_features();
  const auto& p = m.firing_probability();
  const auto& f = m.features();
  std::mt19937_64 gen(1);
  std::uniform_real_distribution<double> uni(0, 1);
  std::normal_distribution<double> normal(0, 1);
  x.assign(size_t(rows * d), 0.f);
  const float noise = float(m.config().noise);
  for (int64_t r = 0; r < rows; r++) {
    float* xr = x.data() + r * d;
    for (int64_t i = 0; i < n; i++) {
      if (uni(gen) >= p[size_t(i)]) continue;
      const float mag = float(m.config().mag_lo + (m.config().mag_hi - m.config().mag_lo) * uni(gen));
      for (int64_t j = 0; j < d; j++) xr[j] += mag * f[size_t(i * d + j)];
    }
    for (int64_t j = 0; j < d; j++) xr[j] += noise * float(normal(gen));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? atoll(argv[1]) : 16384;
  toy::ToyConfig c;
  c.d = argc > 2 ? atoll(argv[2]) : 512;
  c.features = argc > 3 ? atoll(argv[3]) : 8192;
  c.active = argc > 4 ? atof(argv[4]) : 32;
  c.rows = rows;
  const int threads = omp_get_max_threads();
  printf("toy source: %lld rows, d %lld, %lld features, %.0f active, %d threads\n", (long long)rows,
         (long long)c.d, (long long)c.features, c.active, threads);

  auto t = clk::now();
  const toy::ToyModel m(c);
  const double t_model = seconds_since(t);

  Batch b;
  m.generate(0, 1024, b, nullptr, 1);  // warm up (tables, pages)
  double cpu = thread_cpu();
  t = clk::now();
  m.generate(0, rows, b, nullptr, 1);  // runs on this thread
  const double t1_wall = seconds_since(t), t1 = thread_cpu() - cpu;
  t = clk::now();
  m.generate(0, rows, b, nullptr, threads);
  const double tn = seconds_since(t);

  std::vector<float> ref;
  const int64_t ref_rows = std::max<int64_t>(rows / 8, 256);
  cpu = thread_cpu();
  reference_rows(m, ref_rows, ref);
  const double tref = (thread_cpu() - cpu) * double(rows) / double(ref_rows);

  // Writing the generated rows as a stream (compression on all threads), f32 at the default level
  // and bf16 at level 1.
  auto write_time = [&](DType dt, int level) {
    FILE* devnull = fopen("/dev/null", "wb");
    WriterOptions wo;
    wo.level = level;
    wo.threads = threads;
    const auto start = clk::now();
    StreamWriter w(devnull, "/dev/null", make_header("activations", c.d, dt), wo);
    for (int64_t first = 0; first < rows; first += 4096) {
      Batch part;
      part.rows = std::min<int64_t>(4096, rows - first);
      part.x.assign(b.x.begin() + first * c.d, b.x.begin() + (first + part.rows) * c.d);
      w.write(std::move(part));
    }
    w.finish();
    const double s = seconds_since(start);
    fclose(devnull);
    return s;
  };
  const double tw32 = write_time(DType::f32, 3), tw16 = write_time(DType::bf16, 1);

  const double mb = double(rows * c.d) * 4 / 1e6;
  printf("model set-up (features, probabilities):  %.3f s\n", t_model);
  printf("generate, 1 thread:     %8.0f rows/s  %7.0f MB/s of f32   (CPU time; wall: %.0f rows/s)\n", rows / t1,
         mb / t1, rows / t1_wall);
  printf("generate, %d threads:   %8.0f rows/s  %7.0f MB/s of f32   (wall time; x%.2f of 1 thread's wall)\n",
         threads, rows / tn, mb / tn, t1_wall / tn);
  printf("plain reference:        %8.0f rows/s                      (CPU time; toy is x%.1f faster)\n",
         rows / tref, tref / t1);
  printf("write f32 zstd 3:       %8.0f rows/s                      (wall; generation is %.0f%% of gen+write)\n",
         rows / tw32, 100 * tn / (tn + tw32));
  printf("write bf16 zstd 1:      %8.0f rows/s                      (wall; generation is %.0f%% of gen+write)\n",
         rows / tw16, 100 * tn / (tn + tw16));
  return 0;
}
