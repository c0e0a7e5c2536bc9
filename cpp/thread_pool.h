// A fork-join parallel loop for the CPU kernels.
//
// Thread-safety: parallel_for is reentrant; it owns the threads it starts and joins them
// before returning. `fn` is called concurrently from several threads, each with its own
// Scratch object, so it must only share read-only state or write disjoint outputs.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace vcd {

// Number of worker threads for a requested count (0 = hardware concurrency, at least 1).
inline int resolve_num_threads(int requested) {
  if (requested > 0) return requested;
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(hardware);
}

// Runs fn(task, scratch) for task in [0, num_tasks) on up to `num_threads` threads (the
// calling thread included). Tasks are handed out dynamically; the first exception thrown
// by any task stops the hand-out and is rethrown here after all threads have joined.
template <typename Scratch, typename Fn>
void parallel_for(int64_t num_tasks, int num_threads, Fn&& fn) {
  if (num_tasks <= 0) return;
  const int64_t threads = std::min<int64_t>(resolve_num_threads(num_threads), num_tasks);
  if (threads <= 1) {
    Scratch scratch;
    for (int64_t task = 0; task < num_tasks; ++task) fn(task, scratch);
    return;
  }

  std::atomic<int64_t> next_task{0};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto worker = [&]() {
    try {
      Scratch scratch;
      for (;;) {
        const int64_t task = next_task.fetch_add(1);
        if (task >= num_tasks) break;
        fn(task, scratch);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
      next_task.store(num_tasks);
    }
  };

  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int64_t i = 1; i < threads; ++i) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // Could not start more threads: run with the ones we have.
    }
  }
  worker();
  for (auto& thread : pool) thread.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace vcd
