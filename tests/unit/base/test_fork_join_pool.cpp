// ForkJoinPool: every index of every run is visited exactly once, in contiguous chunks, through
// both the spinning and the sleeping hand-over, and callers on two threads take turns safely.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "base/fork_join_pool.h"

using sae::ForkJoinPool;

namespace {
// Runs one loop over n indices and checks the visits.
void check_run(ForkJoinPool& pool, int64_t n) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  for (auto& h : hits) h = 0;
  pool.run(n, [&](int64_t b, int64_t e, int t) {
    EXPECT_LT(b, e);
    EXPECT_GE(t, 0);
    EXPECT_LT(t, pool.size());
    if (n > 1) {  // chunk t is [n*t/size, n*(t+1)/size); a single index runs on the caller
      EXPECT_EQ(b, n * t / pool.size());
      EXPECT_EQ(e, n * (t + 1) / pool.size());
    } else {
      EXPECT_EQ(t, 0);
    }
    for (int64_t i = b; i < e; i++) hits[size_t(i)]++;
  });
  for (int64_t i = 0; i < n; i++) ASSERT_EQ(hits[size_t(i)].load(), 1) << "n " << n << " index " << i;
}
}  // namespace

TEST(ForkJoinPool, EveryIndexOnceInContiguousChunks) {
  for (int threads : {1, 2, 3, 5}) {
    ForkJoinPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {1, 2, 3, 4, 7, 100, 1001}) check_run(pool, n);
    pool.run(0, [](int64_t, int64_t, int) { ADD_FAILURE() << "called for an empty range"; });
  }
}

// Back-to-back runs hand over while the workers spin; pauses longer than the spin (~50 us) make
// them sleep, so the wake-up path runs too.
TEST(ForkJoinPool, SpinningAndSleepingHandOver) {
  ForkJoinPool pool(3);
  for (int i = 0; i < 3000; i++) {
    check_run(pool, 1 + i % 17);
    if (i % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

TEST(ForkJoinPool, CallersOnTwoThreadsTakeTurns) {
  ForkJoinPool pool(2);
  auto many = [&] {
    for (int i = 0; i < 500; i++) check_run(pool, 64);
  };
  std::thread a(many), b(many);
  a.join();
  b.join();
}
