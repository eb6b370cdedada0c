// ForkJoinPool: workers wait for a new generation of work, spinning briefly and then sleeping on a
// condition variable; the caller waits for the last chunk the same way. Sleep and wake-up pair
// up Dekker-style: a waiter announces itself (sleepers++) before it re-checks the condition
// under the mutex, and a waker publishes its change before it looks for sleepers, so with
// sequentially consistent atomics one of the two always sees the other.
#include "base/fork_join_pool.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace sae {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until pred() or about 50 microseconds have passed; true if pred() came true.
template <class P>
bool spin_for(P pred) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
  for (int i = 0;; i++) {
    if (pred()) return true;
    cpu_relax();
    if ((i & 15) == 15 && std::chrono::steady_clock::now() > until) return pred();
  }
}

}  // namespace

struct ForkJoinPool::Impl {
  std::vector<std::thread> workers;
  std::mutex run_mu;  // one run() at a time: callers on several threads take turns
  std::mutex mu;
  std::condition_variable work_cv, done_cv;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> remaining{0};
  std::atomic<int> sleeping_workers{0};
  std::atomic<bool> caller_sleeping{false};
  std::atomic<bool> stop{false};
  const std::function<void(int64_t, int64_t, int)>* job = nullptr;
  int64_t n = 0;
  int threads = 1;

  void chunk(int t) {
    const int64_t b = n * t / threads, e = n * (t + 1) / threads;
    if (e > b) (*job)(b, e, t);
  }

  void worker(int t) {
    uint64_t seen = 0;
    for (;;) {
      auto fresh = [&] { return generation.load() != seen || stop.load(); };
      if (!spin_for(fresh)) {
        std::unique_lock<std::mutex> lk(mu);
        sleeping_workers++;
        work_cv.wait(lk, fresh);
        sleeping_workers--;
      }
      if (stop.load()) return;
      seen = generation.load();
      chunk(t);
      if (remaining.fetch_sub(1) == 1 && caller_sleeping.load()) {
        std::lock_guard<std::mutex> lk(mu);
        done_cv.notify_one();
      }
    }
  }
};

ForkJoinPool::ForkJoinPool(int threads) : threads_(threads < 1 ? 1 : threads), impl_(std::make_unique<Impl>()) {
  impl_->threads = threads_;
  for (int t = 1; t < threads_; t++) impl_->workers.emplace_back([this, t] { impl_->worker(t); });
}

ForkJoinPool::~ForkJoinPool() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stop = true;
    impl_->work_cv.notify_all();
  }
  for (auto& w : impl_->workers) w.join();
}

void ForkJoinPool::run(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  Impl& p = *impl_;
  if (threads_ == 1 || n == 1) {
    fn(0, n, 0);
    return;
  }
  std::lock_guard<std::mutex> turn(p.run_mu);
  p.job = &fn;
  p.n = n;
  p.remaining = threads_ - 1;
  p.generation++;
  if (p.sleeping_workers.load() > 0) {
    std::lock_guard<std::mutex> lk(p.mu);
    p.work_cv.notify_all();
  }
  p.chunk(0);
  auto done = [&] { return p.remaining.load() == 0; };
  if (!spin_for(done)) {
    std::unique_lock<std::mutex> lk(p.mu);
    p.caller_sleeping = true;
    p.done_cv.wait(lk, done);
    p.caller_sleeping = false;
  }
}

ForkJoinPool& ForkJoinPool::global() {
  static ForkJoinPool pool(omp_get_max_threads());
  return pool;
}

int ForkJoinPool::threads_for(int requested) {
  return requested > 0 ? requested : std::max(1, int(std::thread::hardware_concurrency()));
}

}  // namespace sae
