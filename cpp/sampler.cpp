#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace vcd {
namespace {

// Sampling never produces more rows than this; beyond it the arguments are surely wrong
// (e.g. fps = 1e9) and we would only run out of memory.
constexpr double kMaxSamples = 1e9;
// Slack so that a frame whose pts is a rounding error past the sample time still counts.
constexpr double kPtsTolerance = 1e-6;

std::string format_double(double value) {
  std::ostringstream out;
  out.precision(17);
  out << value;
  return out.str();
}

void check_duration(double duration) {
  if (!std::isfinite(duration)) {
    throw std::invalid_argument("duration must be finite (> 0 to set it, <= 0 to derive it from pts), got " +
                                format_double(duration));
  }
}

// The finite pts, sorted, one entry per distinct value, each with the first input index
// that carries it (see Note [Sampling contract] in sampler.h).
struct FrameTimeline {
  std::vector<double> pts;        // ascending, distinct, absolute seconds
  std::vector<int64_t> first_index;  // input index of the first frame with that pts

  bool empty() const { return pts.empty(); }
  double t0() const { return pts.front(); }

  // Median step between consecutive distinct pts; `fallback_step` if there is one pts.
  double median_step(double fallback_step) const {
    if (pts.size() < 2) return fallback_step;
    std::vector<double> steps(pts.size() - 1);
    for (size_t i = 0; i + 1 < pts.size(); ++i) steps[i] = pts[i + 1] - pts[i];
    std::sort(steps.begin(), steps.end());
    const size_t mid = steps.size() / 2;
    return steps.size() % 2 == 1 ? steps[mid] : (steps[mid - 1] + steps[mid]) / 2.0;
  }

  double relative_end(double duration, double fallback_step) const {
    if (duration > 0) return duration;
    return (pts.back() - t0()) + median_step(fallback_step);
  }

  // Index into `pts` of the frame displayed at relative time t (t >= 0 always finds one).
  size_t displayed_at(double t) const {
    const double limit = t0() + t + kPtsTolerance;
    const auto it = std::upper_bound(pts.begin(), pts.end(), limit);
    return it == pts.begin() ? 0 : static_cast<size_t>(it - pts.begin()) - 1;
  }
};

FrameTimeline build_timeline(const double* pts, int64_t num_pts) {
  if (num_pts < 0) throw std::invalid_argument("num_pts must be >= 0, got " + std::to_string(num_pts));
  std::vector<std::pair<double, int64_t>> finite;
  finite.reserve(static_cast<size_t>(num_pts));
  for (int64_t i = 0; i < num_pts; ++i) {
    if (std::isfinite(pts[i])) finite.emplace_back(pts[i], i);
  }
  // Sorting the pairs orders equal pts by input index, so the first of a run is the
  // first frame in input order.
  std::sort(finite.begin(), finite.end());
  FrameTimeline timeline;
  for (const auto& [value, index] : finite) {
    if (!timeline.pts.empty() && timeline.pts.back() == value) continue;
    timeline.pts.push_back(value);
    timeline.first_index.push_back(index);
  }
  return timeline;
}

// Appends sample [start, end) showing timeline entry `entry`, merging it into the
// previous row when that row shows the same frame.
void append_sample(const FrameTimeline& timeline, size_t entry, double start, double end,
                   SampleSelection& selection) {
  const int64_t frame = timeline.first_index[entry];
  if (!selection.frame_indices.empty() && selection.frame_indices.back() == frame) {
    selection.ends.back() = end;
    return;
  }
  selection.frame_indices.push_back(frame);
  selection.starts.push_back(start);
  selection.ends.push_back(end);
}

}  // namespace

SampleSelection sample_uniform(const double* pts, int64_t num_pts, double fps, double duration) {
  if (!(std::isfinite(fps) && fps > 0)) {
    throw std::invalid_argument("fps must be finite and > 0, got " + format_double(fps));
  }
  check_duration(duration);
  SampleSelection selection;
  const FrameTimeline timeline = build_timeline(pts, num_pts);
  if (timeline.empty()) return selection;

  const double t_end = timeline.relative_end(duration, 1.0 / fps);
  const double count_real = std::ceil(t_end * fps - kPtsTolerance);
  if (!(count_real <= kMaxSamples)) {
    throw std::invalid_argument("sampling " + format_double(t_end) + " s at fps " + format_double(fps) +
                                " gives more than 1e9 samples");
  }
  const int64_t count = std::max<int64_t>(0, static_cast<int64_t>(count_real));
  for (int64_t k = 0; k < count; ++k) {
    const double start = static_cast<double>(k) / fps;
    const double end = std::min(static_cast<double>(k + 1) / fps, t_end);
    append_sample(timeline, timeline.displayed_at(start), start, end, selection);
  }
  return selection;
}

SampleSelection sample_uniform(const std::vector<double>& pts, double fps, double duration) {
  return sample_uniform(pts.data(), static_cast<int64_t>(pts.size()), fps, duration);
}

SampleSelection sample_at_times(const double* pts, int64_t num_pts, const double* times, int64_t num_times,
                                double duration) {
  check_duration(duration);
  if (num_times < 0) throw std::invalid_argument("num_times must be >= 0, got " + std::to_string(num_times));
  SampleSelection selection;
  const FrameTimeline timeline = build_timeline(pts, num_pts);
  if (timeline.empty()) return selection;

  const double t_end = timeline.relative_end(duration, /*fallback_step=*/1.0);
  std::vector<double> kept;
  kept.reserve(static_cast<size_t>(num_times));
  for (int64_t i = 0; i < num_times; ++i) {
    if (std::isfinite(times[i]) && times[i] >= 0 && times[i] < t_end) kept.push_back(times[i]);
  }
  std::sort(kept.begin(), kept.end());
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  for (size_t k = 0; k < kept.size(); ++k) {
    const double end = k + 1 < kept.size() ? kept[k + 1] : t_end;
    append_sample(timeline, timeline.displayed_at(kept[k]), kept[k], end, selection);
  }
  return selection;
}

SampleSelection sample_at_times(const std::vector<double>& pts, const std::vector<double>& times,
                                double duration) {
  return sample_at_times(pts.data(), static_cast<int64_t>(pts.size()), times.data(),
                         static_cast<int64_t>(times.size()), duration);
}

}  // namespace vcd
