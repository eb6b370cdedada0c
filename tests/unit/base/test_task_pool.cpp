// TaskPool: every task runs once and its future carries its result (or its exception); tasks
// really run on the pool's threads, side by side; destroying the pool waits for the running tasks
// and drops the queued ones, whose futures then report a broken promise.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

#include "base/task_pool.h"

using sae::TaskPool;

TEST(TaskPool, EveryTaskRunsOnceWithItsResult) {
  TaskPool pool(3);
  std::atomic<int> runs{0};
  std::vector<std::future<int>> f;
  for (int i = 0; i < 200; i++) f.push_back(pool.submit([i, &runs] { runs++; return i * i; }));
  for (int i = 0; i < 200; i++) EXPECT_EQ(f[size_t(i)].get(), i * i);
  EXPECT_EQ(runs.load(), 200);
}

TEST(TaskPool, AnExceptionReachesTheFuture) {
  TaskPool pool(1);
  auto f = pool.submit([]() -> int { throw std::runtime_error("task failed"); });
  EXPECT_THROW(
      {
        try {
          f.get();
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "task failed");
          throw;
        }
      },
      std::runtime_error);
  EXPECT_EQ(pool.submit([] { return 7; }).get(), 7);  // the thread survives
}

TEST(TaskPool, TasksRunSideBySideOnThePoolsThreads) {
  // Two tasks that each wait for the other can only both finish on two threads at once.
  TaskPool pool(2);
  std::atomic<int> arrived{0};
  auto meet = [&] {
    arrived++;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (arrived.load() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    return std::this_thread::get_id();
  };
  auto a = pool.submit(meet), b = pool.submit(meet);
  const auto ta = a.get(), tb = b.get();
  EXPECT_EQ(arrived.load(), 2);
  EXPECT_NE(ta, tb);
  EXPECT_NE(ta, std::this_thread::get_id());
  EXPECT_NE(tb, std::this_thread::get_id());
}

TEST(TaskPool, DestructionWaitsForRunningTasksAndDropsQueuedOnes) {
  std::atomic<bool> started{false}, closing{false}, finished{false};
  std::future<void> running, queued;
  {
    TaskPool pool(1);
    // The running task holds the pool's only thread until 300 ms after the pool starts closing,
    // so the queued task is still queued when the destructor drops it (unless this thread stalls
    // for 300 ms between setting `closing` and the destructor taking the queue's lock).
    running = pool.submit([&] {
      started = true;
      while (!closing) std::this_thread::yield();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      finished = true;
    });
    queued = pool.submit([] {});
    while (!started) std::this_thread::yield();
    closing = true;
  }
  EXPECT_TRUE(finished.load());
  running.get();
  try {
    queued.get();
    ADD_FAILURE() << "the queued task ran";
  } catch (const std::future_error& e) {
    EXPECT_EQ(e.code(), std::future_errc::broken_promise);
  }
}
