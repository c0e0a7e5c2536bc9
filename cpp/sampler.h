// Frame sampling: which decoded frames stand for which stretch of a video.
//
// Pure functions of their arguments (no global state): safe to call concurrently from
// any number of threads.
//
// Note [Sampling contract]
// ------------------------
// `pts` holds per-frame presentation timestamps in seconds, in the order the decoder
// outputs frames. They may be irregular (VFR), repeated, have gaps and start anywhere;
// non-finite entries (NaN, +-inf) are never selected.
//   * t0 = min finite pts. All output times are relative to t0 (first frame = 0 s).
//   * The end of the video t_end (relative) is `duration` if `duration > 0`, otherwise
//     (max pts - t0) + the median step between consecutive distinct sorted pts (or a
//     fallback step when there is only one distinct pts: 1/fps for sample_uniform,
//     1 s for sample_at_times).
//   * The frame displayed at relative time t is the frame with the largest
//     pts <= t0 + t + 1e-6; ties on equal pts go to the first frame in input order.
//   * Consecutive samples that pick the same frame are emitted once, with their
//     intervals merged, so each output row is a distinct frame.
#pragma once

#include <cstdint>
#include <vector>

namespace vcd {

// Selected frames, sorted by time. Row k: frame `frame_indices[k]` (an index into the
// input pts array) stands for the relative interval [starts[k], ends[k]).
struct SampleSelection {
  std::vector<int64_t> frame_indices;
  std::vector<double> starts;
  std::vector<double> ends;
};

// Samples at t_k = k / fps for k = 0 .. ceil(t_end * fps - 1e-6) - 1; sample k covers
// [t_k, min(t_{k+1}, t_end)). With fps = 1 a video of d seconds gives <= ceil(d) rows.
// Throws std::invalid_argument if fps is not finite and > 0 or duration is NaN/inf.
SampleSelection sample_uniform(const double* pts, int64_t num_pts, double fps, double duration = -1.0);
SampleSelection sample_uniform(const std::vector<double>& pts, double fps, double duration = -1.0);

// Samples at explicit relative times (seconds). Times are sorted and deduplicated;
// non-finite times and times outside [0, t_end) are dropped. Time k covers
// [time_k, time_{k+1}), the last one ends at t_end.
// Throws std::invalid_argument if duration is NaN/inf.
SampleSelection sample_at_times(const double* pts, int64_t num_pts, const double* times, int64_t num_times,
                                double duration = -1.0);
SampleSelection sample_at_times(const std::vector<double>& pts, const std::vector<double>& times,
                                double duration = -1.0);

}  // namespace vcd
