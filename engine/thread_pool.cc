#include "engine/thread_pool.h"

#include <algorithm>

namespace flute {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (workers_.empty() || n <= grain) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    n_ = n;
    grain_ = grain;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  work_ready_.notify_all();
  RunChunks(0);
  std::unique_lock<std::mutex> lock(mutex_);
  work_done_.wait(lock, [this] { return pending_ == 0; });
  fn_ = nullptr;
}

// Thread t of T takes the t-th of T equal spans of [0, n), cut at multiples of grain.
void ThreadPool::RunChunks(int thread_index) {
  const int64_t num_grains = (n_ + grain_ - 1) / grain_;
  const int64_t threads = num_threads();
  const int64_t begin = std::min(n_, num_grains * thread_index / threads * grain_);
  const int64_t end = std::min(n_, num_grains * (thread_index + 1) / threads * grain_);
  if (begin < end) (*fn_)(begin, end);
}

void ThreadPool::WorkerLoop(int worker_index) {
  uint64_t seen_generation = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
      if (stopping_) return;
      seen_generation = generation_;
    }
    RunChunks(worker_index);
    bool last;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last = --pending_ == 0;
    }
    if (last) work_done_.notify_one();
  }
}

}  // namespace flute
