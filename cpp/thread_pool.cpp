#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace vcd {
namespace {

// The workers of one pool (Note [One persistent pool] in thread_pool.h).
class ThreadPool {
 public:
  explicit ThreadPool(int size) : size_(size) {}
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { stop_workers(); }

  int size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return size_;
  }

  // Stops and joins the current workers; the next run() starts `size` - 1 new ones.
  void resize(int size) {
    stop_workers();
    std::lock_guard<std::mutex> lock(mutex_);
    size_ = size;
  }

  void run(detail::Job& job) {
    if (job.max_helpers > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!stopping_) {
        if (!started_) start_workers_locked();
        if (!workers_.empty()) {
          queue_.push_back(&job);
          const int wake = std::min<int>(job.max_helpers, static_cast<int>(workers_.size()));
          for (int i = 0; i < wake; ++i) wake_.notify_one();
        }
      }
    }
    job.work();
    {
      // No worker may pick the job up from now on...
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (*it == &job) {
          queue_.erase(it);
          break;
        }
      }
    }
    // ...and the ones that did must be done with it before it goes out of scope.
    std::unique_lock<std::mutex> lock(job.mutex);
    job.helpers_left.wait(lock, [&] { return job.helpers == 0; });
    if (job.first_error) std::rethrow_exception(job.first_error);
  }

 private:
  void start_workers_locked() {
    started_ = true;
    for (int i = 1; i < size_; ++i) {
      try {
        workers_.emplace_back([this] { worker_loop(); });
      } catch (const std::system_error&) {
        break;  // Could not start more threads: run with the ones we have.
      }
    }
  }

  void stop_workers() {
    std::vector<std::thread> workers;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      workers.swap(workers_);
    }
    wake_.notify_all();
    for (auto& worker : workers) worker.join();
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = false;
    started_ = false;
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      detail::Job* job = queue_.front();
      {
        // Registered while the job is still queued (under mutex_), so its caller, which
        // dequeues it under mutex_ before waiting for helpers == 0, cannot miss us.
        std::lock_guard<std::mutex> job_lock(job->mutex);
        ++job->helpers;
        if (job->helpers >= job->max_helpers || job->next.load() >= job->num_tasks) queue_.pop_front();
      }
      lock.unlock();
      job->work();
      {
        // Notify while holding the job's mutex: once it is released the caller may
        // destroy the job.
        std::lock_guard<std::mutex> job_lock(job->mutex);
        --job->helpers;
        job->helpers_left.notify_all();
      }
      lock.lock();
    }
  }

  std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  std::deque<detail::Job*> queue_;  // jobs that may take more helpers
  std::vector<std::thread> workers_;
  int size_;
  bool started_ = false;
  bool stopping_ = false;
};

// The process's pool: created on first use, joined by Reaper at exit, dropped (not
// joined: its threads do not exist there) in a forked child.
std::mutex g_pool_mutex;
std::shared_ptr<ThreadPool> g_pool;  // guarded by g_pool_mutex
int g_requested_threads = 0;          // set_num_threads' value; 0 = affinity
bool g_exiting = false;               // the pool was joined at exit: run on the caller only

int resolved_size_locked() { return g_requested_threads > 0 ? g_requested_threads : affinity_cpu_count(); }

void prepare_fork() { g_pool_mutex.lock(); }
void parent_after_fork() { g_pool_mutex.unlock(); }
void child_after_fork() {
  // The copied pool's workers did not survive the fork; destroying it would join threads
  // that are not there. Leak it on purpose and start a fresh pool on next use.
  new std::shared_ptr<ThreadPool>(std::move(g_pool));
  g_pool.reset();
  g_pool_mutex.unlock();
}

struct Reaper {
  Reaper() { pthread_atfork(&prepare_fork, &parent_after_fork, &child_after_fork); }
  ~Reaper() {
    std::shared_ptr<ThreadPool> pool;
    {
      std::lock_guard<std::mutex> lock(g_pool_mutex);
      g_exiting = true;
      pool.swap(g_pool);
    }
    // Joins the workers here unless a call is still running on another thread; then the
    // last such call joins them when it returns.
    pool.reset();
  }
};
Reaper g_reaper;

std::shared_ptr<ThreadPool> acquire_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_exiting) return nullptr;
  if (!g_pool) g_pool = std::make_shared<ThreadPool>(resolved_size_locked());
  return g_pool;
}

}  // namespace

int affinity_cpu_count() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) {
    const int count = CPU_COUNT(&mask);
    if (count > 0) return count;
  }
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(hardware);
}

int get_num_threads() {
  std::shared_ptr<ThreadPool> pool;
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    if (!g_pool) return resolved_size_locked();
    pool = g_pool;
  }
  return pool->size();
}

void set_num_threads(int num_threads) {
  if (num_threads < 0) {
    throw std::invalid_argument("num_threads must be >= 0 (0 = the CPUs in the process's affinity mask), got " +
                                std::to_string(num_threads));
  }
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  g_requested_threads = num_threads;
  if (g_pool) g_pool->resize(resolved_size_locked());
}

namespace detail {

void Job::work() noexcept {
  for (;;) {
    const int64_t task = next.fetch_add(1);
    if (task >= num_tasks) return;
    try {
      run_task(context, task);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!first_error) first_error = std::current_exception();
      next.store(num_tasks);
    }
  }
}

void run_job(Job& job) {
  const std::shared_ptr<ThreadPool> pool = acquire_pool();
  if (!pool) {
    job.work();
    if (job.first_error) std::rethrow_exception(job.first_error);
    return;
  }
  pool->run(job);
}

}  // namespace detail
}  // namespace vcd
