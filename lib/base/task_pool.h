// A queue of independent tasks on a fixed set of threads, taken in submission order, each with a
// future for its result. The stream writer compresses frames and the reader decompresses them on
// it, so the caller keeps reading or writing while earlier frames are still being worked on.
// (Its sibling, base/fork_join_pool.h, is the other kind of pool: one parallel loop at a time,
// split among the threads, the caller waiting for all of it.)
//
// Tasks still queued when the pool is destroyed are dropped (their futures report a broken
// promise to nobody); the destructor waits for the tasks already running.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace sae {

class TaskPool {
 public:
  explicit TaskPool(int threads) {
    for (int i = 0; i < threads; i++) threads_.emplace_back([this] { loop(); });
  }
  ~TaskPool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      q_.clear();
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  template <class F>
  auto submit(F f) -> std::future<decltype(f())> {
    auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
    auto fut = task->get_future();
    {
      std::lock_guard<std::mutex> lk(m_);
      q_.emplace_back([task] { (*task)(); });
    }
    cv_.notify_one();
    return fut;
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
        if (stop_) return;
        f = std::move(q_.front());
        q_.pop_front();
      }
      f();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

}  // namespace sae
