// The process-wide worker pool behind the CPU kernels, and the fork-join loop on top of it.
//
// Thread-safety: every function here may be called from any number of threads at once.
// parallel_for calls may run concurrently (from several decoder threads, say): their
// tasks share the pool's workers, and each call returns once all of its own tasks have
// run. `fn` is called concurrently from several threads, each with its own Scratch
// object, so it must only share read-only state or write disjoint outputs.
//
// Note [One persistent pool]
// --------------------------
// Starting threads per call cost tens of microseconds per thread on every resize, and
// several concurrent callers each started all cores' worth of threads. Instead there is
// one pool per process:
//   * created on first use (the first parallel_for that could use more than one thread),
//     never before: importing the extension or calling set_num_threads starts no threads;
//   * sized once, to the CPUs in the process's affinity mask (sched_getaffinity, so
//     `taskset`, cgroup cpusets and container limits are honoured, unlike
//     std::thread::hardware_concurrency), or to set_num_threads(n); a later
//     set_num_threads stops and joins the workers and starts the new number;
//   * the calling thread always works on its own call too, so a pool of n threads has
//     n - 1 workers; a call's `max_threads` limits how many of them may help it;
//   * joined at process exit by the pool's static destructor: workers only wait on the
//     pool's condition variable between tasks and never take Python's GIL, so the join
//     cannot deadlock; a call still running elsewhere at that point finishes its
//     remaining tasks on its own thread;
//   * fork: a child process keeps none of the parent's workers (fork copies only the
//     forking thread). A pthread_atfork handler drops the copied pool in the child
//     (without touching its threads) and the next call there starts a fresh one, so the
//     resizers keep working after fork.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <type_traits>

namespace vcd {

// CPUs this process may run on (sched_getaffinity); hardware_concurrency() if that fails;
// at least 1.
int affinity_cpu_count();

// Size of the pool: threads that work on one call, the calling thread included.
int get_num_threads();

// Resize the pool to `num_threads` (>= 1), or back to affinity_cpu_count() for 0. Waits
// for the current workers to finish the task they are running. Throws
// std::invalid_argument for a negative count.
void set_num_threads(int num_threads);

namespace detail {

// One parallel_for call as the pool sees it: tasks [0, num_tasks) handed out by `next`.
struct Job {
  using RunTask = void (*)(void* context, int64_t task);

  RunTask run_task = nullptr;
  void* context = nullptr;
  int64_t num_tasks = 0;
  int max_helpers = 0;  // workers allowed to join besides the caller

  std::atomic<int64_t> next{0};
  std::mutex mutex;                 // guards helpers and first_error
  std::condition_variable helpers_left;  // signalled when a helper stops working on the job
  int helpers = 0;                  // workers currently working on this job
  std::exception_ptr first_error;

  // Runs tasks until none are left; records the first exception and stops the hand-out.
  void work() noexcept;
};

// Runs `job` on the calling thread plus up to job.max_helpers pool workers; returns when
// every task has run and no worker touches the job any more; rethrows the first error.
void run_job(Job& job);

template <typename Scratch, typename Fn>
struct JobContext {
  Fn* fn;
  static void run(void* context, int64_t task) {
    // Per-thread scratch buffers live as long as the thread, so repeated calls do not
    // reallocate them.
    thread_local Scratch scratch;
    (*static_cast<JobContext*>(context)->fn)(task, scratch);
  }
};

}  // namespace detail

// Runs fn(task, scratch) for task in [0, num_tasks) on at most `max_threads` threads of
// the pool (the calling thread included; 0 = the whole pool). Tasks are handed out
// dynamically; the first exception thrown by any task stops the hand-out and is rethrown
// here once the call's other tasks have stopped.
template <typename Scratch, typename Fn>
void parallel_for(int64_t num_tasks, int max_threads, Fn&& fn) {
  if (num_tasks <= 0) return;
  using Context = detail::JobContext<Scratch, std::remove_reference_t<Fn>>;
  Context context{&fn};
  if (num_tasks == 1 || max_threads == 1) {
    for (int64_t task = 0; task < num_tasks; ++task) Context::run(&context, task);
    return;
  }
  detail::Job job;
  job.run_task = &Context::run;
  job.context = &context;
  job.num_tasks = num_tasks;
  const int64_t threads = max_threads > 0 ? max_threads : INT32_MAX;
  job.max_helpers = static_cast<int>(std::min<int64_t>(threads, num_tasks) - 1);
  detail::run_job(job);
}

}  // namespace vcd
