// Fork-join parallel loops: a fixed pool that runs one loop at a time, split in contiguous chunks,
// the calling thread taking the first and returning when every chunk is done. The CPU forward
// pass runs its loops on it. (Its sibling, base/task_pool.h, is the other kind of pool: a queue
// of independent tasks, each with a future, that the caller does not wait on as a group; the
// stream reader and writer compress and decompress frames on it.)
//
// Why not OpenMP's `parallel for`: at the end of every loop libgomp spins up to 300000 PAUSE
// instructions (about 20 ms on current Xeons, where PAUSE takes ~140 cycles) before a waiting
// thread sleeps, and that spinning takes the core the other thread needs whenever anything else
// runs on the machine. A forward pass has a dozen loops per layer; measured on the 2-core
// development machine under load, stories260K ran at 2.3k tokens/s with OpenMP's default waiting
// and at 10.6k with GOMP_SPINCOUNT=1000 (which only the environment, before start-up, can set).
// This pool spins for at most ~50 us, then sleeps. The loop bodies still use `#pragma omp simd`.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

namespace sae {

class ForkJoinPool {
 public:
  explicit ForkJoinPool(int threads);  // threads - 1 workers are started
  ~ForkJoinPool();
  ForkJoinPool(const ForkJoinPool&) = delete;
  ForkJoinPool& operator=(const ForkJoinPool&) = delete;
  int size() const { return threads_; }
  // Calls fn(begin, end, thread) for contiguous chunks covering [0, n), one chunk per thread
  // (chunk t is [n*t/size, n*(t+1)/size); empty chunks are skipped), and returns when all are
  // done. A single index (n = 1) runs as fn(0, 1, 0) on the calling thread. Calls from several threads take turns. Not reentrant: fn must not call run() again.
  // Exceptions must not escape fn.
  void run(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

  // The process's pool for the CPU forward pass: as many threads as OpenMP would use
  // (OMP_NUM_THREADS, else the cores available).
  static ForkJoinPool& global();
  // The thread count a tool's --threads N asks for: N, or every core when N <= 0.
  static int threads_for(int requested);

 private:
  struct Impl;
  int threads_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sae
