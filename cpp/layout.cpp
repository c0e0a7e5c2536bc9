#include "layout.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace vcd {
namespace {

// Note [Layout evidence] 3-4: a seam's coverage (a window side's support) must exceed that of
// every parallel line kLatticeNear..kLatticeFar pixels away on one of its sides by kProminence.
constexpr int32_t kLatticeNear = 5, kLatticeFar = 20;
constexpr double kProminence = 0.2;
// A window's inside, for its change over time: this many pixels inside its sides (off the edge steps).
constexpr int32_t kWindowInset = 3;


std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) out << ",";
  out << ")";
  return out.str();
}

// ---------------------------------------------------------------------------------------
// Borders (Note [Layout evidence] 1)

struct LineRef {
  const uint8_t* first;  // first pixel of the line
  int64_t count;         // pixels
  int64_t step;          // stride between pixels
};

double line_mean(const LineRef& line) {
  int64_t sum = 0;
  for (int64_t i = 0; i < line.count; ++i) sum += line.first[i * line.step];
  return static_cast<double>(sum) / static_cast<double>(std::max<int64_t>(line.count, 1));
}

bool line_is_border(const LineRef& line, double colour, const LayoutOptions& options) {
  const int64_t needed = static_cast<int64_t>(std::ceil(options.border_fraction * static_cast<double>(line.count)));
  int64_t inside = 0;
  for (int64_t i = 0; i < line.count; ++i) {
    if (std::abs(static_cast<double>(line.first[i * line.step]) - colour) <= options.border_tolerance) ++inside;
  }
  return inside >= needed;
}

// Thickness of the border starting at line 0 and moving inward: lines(k) is line k from that side.
template <typename LineAt>
int64_t border_thickness(LineAt lines, int64_t max_lines, const LayoutOptions& options) {
  if (max_lines <= 0) return 0;
  const double colour = line_mean(lines(0));
  int64_t k = 0;
  while (k < max_lines && line_is_border(lines(k), colour, options)) ++k;
  return k;
}

FrameLayout frame_borders(const uint8_t* image, int64_t height, int64_t width, const LayoutOptions& options) {
  FrameLayout frame;
  const int64_t top = border_thickness([&](int64_t k) { return LineRef{image + k * width, width, 1}; }, height, options);
  if (top >= height) {
    frame.blank = true;
    return frame;
  }
  const int64_t bottom = border_thickness(
      [&](int64_t k) { return LineRef{image + (height - 1 - k) * width, width, 1}; }, height - top, options);
  const int64_t rows = height - top - bottom;
  const uint8_t* first_row = image + top * width;
  const int64_t left =
      border_thickness([&](int64_t k) { return LineRef{first_row + k, rows, width}; }, width, options);
  const int64_t right = border_thickness(
      [&](int64_t k) { return LineRef{first_row + (width - 1 - k), rows, width}; }, width - left, options);
  frame.content = {static_cast<int32_t>(left), static_cast<int32_t>(top), static_cast<int32_t>(width - right),
                   static_cast<int32_t>(height - bottom)};
  if (frame.content.width() < 2 || frame.content.height() < 2) frame.blank = true;
  return frame;
}

// The per-video thickness of one side and its confidence, from the usable frames' thicknesses.
std::pair<int64_t, double> video_thickness(std::vector<int64_t> values, const LayoutOptions& options) {
  if (values.empty()) return {0, 0.0};
  std::sort(values.begin(), values.end());
  const size_t index = static_cast<size_t>(std::floor(0.2 * static_cast<double>(values.size() - 1)));
  const int64_t thickness = values[index];
  if (thickness < options.min_border) return {0, 0.0};
  size_t agree = 0;
  for (int64_t v : values) agree += (v >= thickness - 1 && v <= thickness + 3) ? 1 : 0;
  return {thickness, static_cast<double>(agree) / static_cast<double>(values.size())};
}

// ---------------------------------------------------------------------------------------
// Steps (Note [Layout evidence] 2)

// Summed-area table over a (height, width) map of doubles: sum over a rectangle in O(1).
class AreaSums {
 public:
  AreaSums(const std::vector<double>& map, int64_t height, int64_t width)
      : height_(height), width_(width + 1), sums_(static_cast<size_t>((height + 1) * (width + 1)), 0.0) {
    for (int64_t y = 0; y < height; ++y) {
      double row = 0;
      for (int64_t x = 0; x < width; ++x) {
        row += map[static_cast<size_t>(y * width + x)];
        sums_[static_cast<size_t>((y + 1) * width_ + x + 1)] = sums_[static_cast<size_t>(y * width_ + x + 1)] + row;
      }
    }
  }
  // Mean over the part of `r` inside the map (0 when that part is empty).
  double mean(Rect r) const {
    r.x0 = std::clamp<int32_t>(r.x0, 0, static_cast<int32_t>(width_ - 1));
    r.x1 = std::clamp<int32_t>(r.x1, 0, static_cast<int32_t>(width_ - 1));
    r.y0 = std::clamp<int32_t>(r.y0, 0, static_cast<int32_t>(height_));
    r.y1 = std::clamp<int32_t>(r.y1, 0, static_cast<int32_t>(height_));
    if (r.width() <= 0 || r.height() <= 0) return 0.0;
    const double total = at(r.y1, r.x1) - at(r.y0, r.x1) - at(r.y1, r.x0) + at(r.y0, r.x0);
    return total / static_cast<double>(r.area());
  }

 private:
  double at(int64_t y, int64_t x) const { return sums_[static_cast<size_t>(y * width_ + x)]; }
  int64_t height_, width_;
  std::vector<double> sums_;
};

// Seams must span the content: their coverage is checked in each of this many segments.
constexpr int kSegments = 6;

// Per-video accumulators over the content rectangle of every usable frame.
struct Evidence {
  int64_t height = 0, width = 0;
  std::vector<uint16_t> vertical;    // frames with a vertical step at (y, x)
  std::vector<uint16_t> horizontal;  // frames with a horizontal step at (y, x)
  std::vector<int64_t> column_hits[kSegments];  // vertical steps per column, per sixth of the content height
  std::vector<int64_t> row_hits[kSegments];     // horizontal steps per row, per sixth of the content width
  std::vector<double> texture;        // summed |gradient|
  std::vector<double> change;         // summed |frame difference|
  int64_t frames = 0, pairs = 0;
};

inline int32_t step_strength(int a, int b, int c, int d) { return std::abs(c + d - a - b); }

// Marks the steps of one frame inside `content`; fills the frame's strongest seams.
void add_frame_steps(const uint8_t* image, const uint8_t* previous, const Rect& content, const LayoutOptions& options,
                     Evidence& ev, FrameLayout& frame, std::vector<int32_t>& strength) {
  const int64_t w = ev.width;
  const int32_t x0 = content.x0, x1 = content.x1, y0 = content.y0, y1 = content.y1;
  const int64_t rows = content.height(), cols = content.width();
  std::vector<int64_t> frame_columns(static_cast<size_t>(w), 0), frame_rows(static_cast<size_t>(ev.height), 0);
  strength.assign(static_cast<size_t>(ev.height * w), 0);
  // Vertical steps: strength at (y, x) compares columns x-2, x-1 with x, x+1.
  for (int32_t y = y0; y < y1; ++y) {
    const uint8_t* row = image + y * w;
    int32_t* s = strength.data() + y * w;
    for (int32_t x = x0 + 2; x < x1 - 1; ++x) s[x] = step_strength(row[x - 2], row[x - 1], row[x], row[x + 1]);
    const int third = static_cast<int>(std::min<int64_t>(kSegments - 1, (y - y0) * kSegments / std::max<int64_t>(rows, 1)));
    for (int32_t x = x0 + 2; x < x1 - 1; ++x) {
      const int32_t v = s[x];
      if (v < options.step_threshold) continue;
      if ((x - 1 >= x0 + 2 && s[x - 1] > v) || (x - 2 >= x0 + 2 && s[x - 2] > v)) continue;
      if ((x + 1 < x1 - 1 && s[x + 1] >= v) || (x + 2 < x1 - 1 && s[x + 2] >= v)) continue;
      ++ev.vertical[static_cast<size_t>(y * w + x)];
      ++ev.column_hits[third][static_cast<size_t>(x)];
      ++frame_columns[static_cast<size_t>(x)];
    }
  }
  // Horizontal steps: strength at (y, x) compares rows y-2, y-1 with y, y+1.
  strength.assign(static_cast<size_t>(ev.height * w), 0);
  for (int32_t y = y0 + 2; y < y1 - 1; ++y) {
    const uint8_t* a = image + (y - 2) * w;
    const uint8_t* b = image + (y - 1) * w;
    const uint8_t* c = image + y * w;
    const uint8_t* d = image + (y + 1) * w;
    int32_t* s = strength.data() + y * w;
    for (int32_t x = x0; x < x1; ++x) s[x] = step_strength(a[x], b[x], c[x], d[x]);
  }
  for (int32_t y = y0 + 2; y < y1 - 1; ++y) {
    const int32_t* s = strength.data() + y * w;
    for (int32_t x = x0; x < x1; ++x) {
      const int32_t v = s[x];
      if (v < options.step_threshold) continue;
      if ((y - 1 >= y0 + 2 && s[x - w] > v) || (y - 2 >= y0 + 2 && s[x - 2 * w] > v)) continue;
      if ((y + 1 < y1 - 1 && s[x + w] >= v) || (y + 2 < y1 - 1 && s[x + 2 * w] >= v)) continue;
      const int third = static_cast<int>(std::min<int64_t>(kSegments - 1, (x - x0) * kSegments / std::max<int64_t>(cols, 1)));
      ++ev.horizontal[static_cast<size_t>(y * w + x)];
      ++ev.row_hits[third][static_cast<size_t>(y)];
      ++frame_rows[static_cast<size_t>(y)];
    }
  }
  // Texture and change.
  for (int32_t y = std::max(y0, 1); y < y1; ++y) {
    const uint8_t* row = image + y * w;
    const uint8_t* up = row - w;
    double* t = ev.texture.data() + y * w;
    for (int32_t x = std::max(x0, 1); x < x1; ++x) t[x] += std::abs(row[x] - row[x - 1]) + std::abs(row[x] - up[x]);
  }
  if (previous != nullptr) {
    for (int32_t y = y0; y < y1; ++y) {
      const uint8_t* row = image + y * w;
      const uint8_t* before = previous + y * w;
      double* c = ev.change.data() + y * w;
      for (int32_t x = x0; x < x1; ++x) c[x] += std::abs(row[x] - before[x]);
    }
    ++ev.pairs;
  }
  ++ev.frames;
  // This frame's strongest lines (pair bins).
  for (int32_t x = x0; x + 1 < x1; ++x) {
    const double coverage = static_cast<double>(frame_columns[x] + frame_columns[x + 1]) / static_cast<double>(rows);
    if (coverage > frame.vertical_coverage) {
      frame.vertical_coverage = static_cast<float>(coverage);
      frame.vertical_seam = frame_columns[x + 1] > frame_columns[x] ? x + 1 : x;
    }
  }
  for (int32_t y = y0; y + 1 < y1; ++y) {
    const double coverage = static_cast<double>(frame_rows[y] + frame_rows[y + 1]) / static_cast<double>(cols);
    if (coverage > frame.horizontal_coverage) {
      frame.horizontal_coverage = static_cast<float>(coverage);
      frame.horizontal_seam = frame_rows[y + 1] > frame_rows[y] ? y + 1 : y;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Seams (Note [Layout evidence] 3)

struct Seam {
  int32_t position;
  double coverage;
};

// Seams along one axis from per-line hit counts by third; lines span `lo..hi`, each hit line
// crossing `span` pixels per frame.
std::vector<Seam> find_seams(const std::vector<int64_t> (&hits)[kSegments], int32_t lo, int32_t hi, int64_t span,
                             int64_t frames, const LayoutOptions& options) {
  const int64_t extent = hi - lo;
  std::vector<double> pair(static_cast<size_t>(hi + 1), 0.0);
  std::vector<double> third_pair[kSegments];
  double third_span[kSegments];
  for (int t = 0; t < kSegments; ++t) {
    third_pair[t].assign(static_cast<size_t>(hi + 1), 0.0);
    const int64_t begin = span * t / kSegments, end = span * (t + 1) / kSegments;
    third_span[t] = static_cast<double>(std::max<int64_t>(end - begin, 1) * frames);
  }
  // Thirds are split by integer division of the offset (see add_frame_steps), matching begin/end above.
  for (int32_t p = lo; p + 1 < hi; ++p) {
    int64_t total = 0;
    for (int t = 0; t < kSegments; ++t) {
      const int64_t h = hits[t][static_cast<size_t>(p)] + hits[t][static_cast<size_t>(p + 1)];
      third_pair[t][static_cast<size_t>(p)] = static_cast<double>(h) / third_span[t];
      total += h;
    }
    pair[static_cast<size_t>(p)] = static_cast<double>(total) / static_cast<double>(span * frames);
  }
  std::vector<Seam> seams;
  const int32_t margin = static_cast<int32_t>(std::ceil(0.1 * static_cast<double>(extent)));
  for (int32_t p = lo + margin; p + 1 < hi - margin; ++p) {
    const double c = pair[static_cast<size_t>(p)];
    if (c < options.seam_coverage) continue;
    bool peak = true;
    for (int32_t q = std::max(lo, p - 4); q <= std::min(hi - 2, p + 4) && peak; ++q) {
      if (q == p) continue;
      const double other = pair[static_cast<size_t>(q)];
      peak = q < p ? other <= c : other < c;
    }
    if (!peak) continue;
    // A seam stands out from the lines 5-20 pixels away: a pixelised picture's block lattice
    // (or any periodic texture) has many equally covered lines.
    // One side suffices: a stack whose one picture is pixelised still has plain texture beyond the seam.
    double before = 0, after = 0;
    for (int32_t d = kLatticeNear; d <= kLatticeFar; ++d) {
      if (p - d >= lo) before = std::max(before, pair[static_cast<size_t>(p - d)]);
      if (p + d + 1 < hi) after = std::max(after, pair[static_cast<size_t>(p + d)]);
    }
    if (c - std::min(before, after) < kProminence) continue;
    bool spans = true;
    for (int t = 0; t < kSegments; ++t) spans = spans && third_pair[t][static_cast<size_t>(p)] >= 0.7 * options.seam_coverage;
    if (!spans) continue;
    int64_t a = 0, b = 0;
    for (int t = 0; t < kSegments; ++t) {
      a += hits[t][static_cast<size_t>(p)];
      b += hits[t][static_cast<size_t>(p + 1)];
    }
    seams.push_back({b > a ? p + 1 : p, c});
  }
  // Strongest first, spaced >= 15 % of the extent apart, at most max_cells_per_axis - 1.
  std::sort(seams.begin(), seams.end(), [](const Seam& a, const Seam& b) { return a.coverage > b.coverage; });
  std::vector<Seam> kept;
  for (const Seam& s : seams) {
    if (static_cast<int>(kept.size()) >= options.max_cells_per_axis - 1) break;
    bool spaced = true;
    for (const Seam& k : kept) spaced = spaced && std::abs(k.position - s.position) >= 0.15 * static_cast<double>(extent);
    if (spaced) kept.push_back(s);
  }
  return kept;
}

std::vector<int32_t> cuts(int32_t lo, int32_t hi, const std::vector<Seam>& seams) {
  std::vector<int32_t> out{lo};
  for (const Seam& s : seams) out.push_back(s.position);
  out.push_back(hi);
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------------------
// Window (Note [Layout evidence] 4)

// Prefix sums of a binary persistence map along one axis, for the support of a line segment.
struct LineSupport {
  int64_t lines = 0, length = 0;
  std::vector<int32_t> prefix;  // (lines, length + 1)
  double support(int32_t line, int32_t begin, int32_t end) const {
    if (end <= begin) return 0.0;
    double best = 0;
    for (int32_t l = std::max<int32_t>(0, line - 1); l <= std::min<int32_t>(static_cast<int32_t>(lines) - 1, line + 1); ++l) {
      const int32_t* p = prefix.data() + l * (length + 1);
      best = std::max(best, static_cast<double>(p[end] - p[begin]) / static_cast<double>(end - begin));
    }
    return best;
  }
};

// lines x length binary map given by persistent(line, k).
template <typename Persistent>
LineSupport line_support(int64_t lines, int64_t length, Persistent persistent) {
  LineSupport out;
  out.lines = lines;
  out.length = length;
  out.prefix.assign(static_cast<size_t>(lines * (length + 1)), 0);
  for (int64_t l = 0; l < lines; ++l) {
    int32_t* p = out.prefix.data() + l * (length + 1);
    for (int64_t k = 0; k < length; ++k) p[k + 1] = p[k] + (persistent(l, k) ? 1 : 0);
  }
  return out;
}

// Candidate edge lines: lines in [lo, hi) whose longest persistent run (along [begin, end),
// gaps <= 3) is >= min_run, local maxima of run length within +-3 lines, longest first.
std::vector<int32_t> edge_candidates(const LineSupport& support, int32_t lo, int32_t hi, int32_t begin, int32_t end,
                                     int32_t min_run, size_t max_count) {
  std::vector<int32_t> run(static_cast<size_t>(std::max(hi, 0) + 1), 0);
  for (int32_t l = lo; l < hi; ++l) {
    const int32_t* p = support.prefix.data() + l * (support.length + 1);
    int32_t best = 0, start = -1, last = -1;
    for (int32_t k = begin; k < end; ++k) {
      if (p[k + 1] - p[k] == 0) continue;
      if (start < 0 || k - last > 4) start = k;
      last = k;
      best = std::max(best, last - start + 1);
    }
    run[static_cast<size_t>(l)] = best;
  }
  std::vector<int32_t> out;
  for (int32_t l = lo; l < hi; ++l) {
    const int32_t r = run[static_cast<size_t>(l)];
    if (r < min_run) continue;
    bool peak = true;
    for (int32_t q = std::max(lo, l - 3); q < std::min(hi, l + 4) && peak; ++q) {
      if (q != l) peak = q < l ? run[static_cast<size_t>(q)] <= r : run[static_cast<size_t>(q)] < r;
    }
    if (peak) out.push_back(l);
  }
  std::stable_sort(out.begin(), out.end(),
                   [&](int32_t a, int32_t b) { return run[static_cast<size_t>(a)] > run[static_cast<size_t>(b)]; });
  if (out.size() > max_count) out.resize(max_count);
  return out;
}

}  // namespace

void check_layout_options(const LayoutOptions& o) {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (o.border_tolerance < 0 || o.border_tolerance > 255)
    fail("border_tolerance must be in [0, 255], got " + std::to_string(o.border_tolerance));
  if (!(o.border_fraction > 0.0 && o.border_fraction <= 1.0))
    fail("border_fraction must be in (0, 1], got " + std::to_string(o.border_fraction));
  if (o.min_border < 1) fail("min_border must be >= 1, got " + std::to_string(o.min_border));
  if (o.step_threshold < 1 || o.step_threshold > 510)
    fail("step_threshold must be in [1, 510], got " + std::to_string(o.step_threshold));
  for (auto [name, value] : {std::pair<const char*, double>{"seam_coverage", o.seam_coverage},
                             {"edge_persistence", o.edge_persistence},
                             {"window_support", o.window_support}}) {
    if (!(value > 0.0 && value <= 1.0)) fail(std::string(name) + " must be in (0, 1], got " + std::to_string(value));
  }
  if (!(o.min_texture >= 0.0)) fail("min_texture must be >= 0, got " + std::to_string(o.min_texture));
  if (!(o.min_activity >= 0.0)) fail("min_activity must be >= 0, got " + std::to_string(o.min_activity));
  if (o.max_cells_per_axis < 1 || o.max_cells_per_axis > 4)
    fail("max_cells_per_axis must be in [1, 4], got " + std::to_string(o.max_cells_per_axis));
  if (o.min_frames < 2) fail("min_frames must be >= 2, got " + std::to_string(o.min_frames));
}

VideoLayout analyze_layout(const uint8_t* frames, const std::vector<int64_t>& shape, const LayoutOptions& options) {
  check_layout_options(options);
  if (!(shape.size() == 3 || (shape.size() == 4 && shape[1] == 3))) {
    throw std::invalid_argument("frames must have shape (N, H, W) (luma) or (N, 3, H, W) (planar RGB), got " +
                                shape_string(shape));
  }
  const int64_t n = shape[0], h = shape[shape.size() - 2], w = shape[shape.size() - 1];
  if (n < 1 || h < 8 || w < 8 || h > 65535 || w > 65535) {
    throw std::invalid_argument("frames need N >= 1 and 8 <= H, W <= 65535, got shape " + shape_string(shape));
  }
  const int64_t plane = h * w;
  // Luma frames: the input itself, or BT.601 luma of planar RGB.
  std::vector<uint8_t> luma_storage;
  const uint8_t* luma = frames;
  if (shape.size() == 4) {
    luma_storage.resize(static_cast<size_t>(n * plane));
    for (int64_t f = 0; f < n; ++f) {
      const uint8_t* r = frames + f * 3 * plane;
      const uint8_t* g = r + plane;
      const uint8_t* b = g + plane;
      uint8_t* out = luma_storage.data() + f * plane;
      for (int64_t i = 0; i < plane; ++i) out[i] = static_cast<uint8_t>((77 * r[i] + 150 * g[i] + 29 * b[i] + 128) >> 8);
    }
    luma = luma_storage.data();
  }

  VideoLayout layout;
  layout.frame_height = static_cast<int32_t>(h);
  layout.frame_width = static_cast<int32_t>(w);
  layout.content = {0, 0, static_cast<int32_t>(w), static_cast<int32_t>(h)};
  layout.frames.resize(static_cast<size_t>(n));

  // 1. Borders.
  std::vector<int64_t> sides[4];  // top, bottom, left, right
  for (int64_t f = 0; f < n; ++f) {
    FrameLayout& frame = layout.frames[static_cast<size_t>(f)];
    frame = frame_borders(luma + f * plane, h, w, options);
    if (frame.blank) continue;
    ++layout.usable_frames;
    sides[0].push_back(frame.content.y0);
    sides[1].push_back(h - frame.content.y1);
    sides[2].push_back(frame.content.x0);
    sides[3].push_back(w - frame.content.x1);
  }
  if (layout.usable_frames == 0) return layout;
  int64_t thickness[4];
  double confidence = 1.0;
  for (int s = 0; s < 4; ++s) {
    const auto [t, c] = video_thickness(sides[s], options);
    thickness[s] = t;
    if (t > 0) {
      layout.has_border = true;
      confidence = std::min(confidence, c);
    }
  }
  if (layout.has_border && thickness[0] + thickness[1] < h - 8 && thickness[2] + thickness[3] < w - 8) {
    layout.content = {static_cast<int32_t>(thickness[2]), static_cast<int32_t>(thickness[0]),
                      static_cast<int32_t>(w - thickness[3]), static_cast<int32_t>(h - thickness[1])};
    layout.border_confidence = static_cast<float>(confidence);
  } else {
    layout.has_border = false;
  }

  // 2. Steps, texture and change inside the content.
  Evidence ev;
  ev.height = h;
  ev.width = w;
  ev.vertical.assign(static_cast<size_t>(plane), 0);
  ev.horizontal.assign(static_cast<size_t>(plane), 0);
  for (int t = 0; t < kSegments; ++t) {
    ev.column_hits[t].assign(static_cast<size_t>(w + 1), 0);
    ev.row_hits[t].assign(static_cast<size_t>(h + 1), 0);
  }
  ev.texture.assign(static_cast<size_t>(plane), 0.0);
  ev.change.assign(static_cast<size_t>(plane), 0.0);
  std::vector<int32_t> strength;
  const uint8_t* previous = nullptr;
  const Rect content = layout.content;
  for (int64_t f = 0; f < n; ++f) {
    FrameLayout& frame = layout.frames[static_cast<size_t>(f)];
    if (frame.blank) continue;
    const uint8_t* image = luma + f * plane;
    add_frame_steps(image, previous, content, options, ev, frame, strength);
    previous = image;
  }
  for (double& t : ev.texture) t /= static_cast<double>(ev.frames);
  for (double& c : ev.change) c /= static_cast<double>(std::max<int64_t>(ev.pairs, 1));
  const AreaSums texture(ev.texture, h, w), change(ev.change, h, w);
  layout.activity = static_cast<float>(change.mean(content));

  const bool rotated_shape = (w > h) != (content.width() > content.height()) &&
                             std::max(content.width(), content.height()) > 1.15 * std::min(content.width(), content.height());
  if (layout.has_border && rotated_shape) {
    layout.rotated = true;
    layout.rotated_confidence = layout.border_confidence;
  }
  if (ev.frames < options.min_frames || ev.pairs < 1) return layout;

  // 3. Seams.
  std::vector<Seam> columns = find_seams(ev.column_hits, content.x0, content.x1, content.height(), ev.frames, options);
  std::vector<Seam> rows = find_seams(ev.row_hits, content.y0, content.y1, content.width(), ev.frames, options);
  while (!columns.empty() || !rows.empty()) {
    const std::vector<int32_t> xs = cuts(content.x0, content.x1, columns), ys = cuts(content.y0, content.y1, rows);
    std::vector<Rect> cells, active;
    bool textured = true;
    for (size_t r = 0; r + 1 < ys.size(); ++r) {
      for (size_t c = 0; c + 1 < xs.size(); ++c) {
        const Rect cell{xs[c], ys[r], xs[c + 1], ys[r + 1]};
        cells.push_back(cell);
        textured = textured && texture.mean(cell) >= options.min_texture;
        if (change.mean(cell) >= options.min_activity) active.push_back(cell);
      }
    }
    if (textured) {
      if (active.empty()) break;  // nothing moves: straight edges of a still picture
      double weakest = 1.0;
      for (const Seam& s : columns) weakest = std::min(weakest, s.coverage);
      for (const Seam& s : rows) weakest = std::min(weakest, s.coverage);
      if (active.size() == 1) {  // the others are static bars around the picture
        layout.content = active[0];
        layout.has_border = true;
        layout.border_confidence = static_cast<float>(weakest);
        return layout;
      }
      layout.grid_rows = static_cast<int32_t>(ys.size() - 1);
      layout.grid_cols = static_cast<int32_t>(xs.size() - 1);
      for (const Seam& s : columns) layout.column_seams.push_back(s.position);
      for (const Seam& s : rows) layout.row_seams.push_back(s.position);
      std::sort(layout.column_seams.begin(), layout.column_seams.end());
      std::sort(layout.row_seams.begin(), layout.row_seams.end());
      layout.cells = active.size() == cells.size() ? cells : active;
      layout.grid_confidence = static_cast<float>(weakest);
      return layout;
    }
    // Drop the weakest seam and try again.
    std::vector<Seam>* weakest_axis = nullptr;
    double weakest = 2.0;
    for (std::vector<Seam>* axis : {&columns, &rows}) {
      for (const Seam& s : *axis) {
        if (s.coverage < weakest) {
          weakest = s.coverage;
          weakest_axis = axis;
        }
      }
    }
    auto& axis = *weakest_axis;
    axis.erase(std::min_element(axis.begin(), axis.end(),
                                [](const Seam& a, const Seam& b) { return a.coverage < b.coverage; }));
  }

  // 4. Window.
  const int64_t needed = static_cast<int64_t>(std::ceil(options.edge_persistence * static_cast<double>(ev.frames)));
  auto pair_count = [&](const std::vector<uint16_t>& map, int64_t y, int64_t x, int64_t dy, int64_t dx) {
    int64_t count = map[static_cast<size_t>(y * w + x)];
    if (y + dy < h && x + dx < w) count += map[static_cast<size_t>((y + dy) * w + x + dx)];
    return count;
  };
  // Vertical edges: lines are columns, positions along them are rows.
  const LineSupport vertical = line_support(w, h, [&](int64_t x, int64_t y) { return pair_count(ev.vertical, y, x, 0, 1) >= needed; });
  const LineSupport horizontal = line_support(h, w, [&](int64_t y, int64_t x) { return pair_count(ev.horizontal, y, x, 1, 0) >= needed; });
  const int32_t cw = content.width(), ch = content.height();
  std::vector<int32_t> xs = edge_candidates(vertical, content.x0 + 3, content.x1 - 2, content.y0, content.y1,
                                            std::max<int32_t>(12, static_cast<int32_t>(0.12 * ch)), 64);
  std::vector<int32_t> ys = edge_candidates(horizontal, content.y0 + 3, content.y1 - 2, content.x0, content.x1,
                                            std::max<int32_t>(12, static_cast<int32_t>(0.12 * cw)), 64);
  std::vector<std::pair<int32_t, bool>> x_lines{{content.x0, false}, {content.x1, false}};
  std::vector<std::pair<int32_t, bool>> y_lines{{content.y0, false}, {content.y1, false}};
  for (int32_t x : xs) x_lines.push_back({x, true});
  for (int32_t y : ys) y_lines.push_back({y, true});
  double best_score = 0;
  Rect best;
  const int64_t content_area = content.area();
  auto side_changes = [&](const Rect& a, const Rect& b) {
    return change.mean(a) >= options.min_activity || change.mean(b) >= options.min_activity;
  };
  for (const auto& [left, left_real] : x_lines) {
    for (const auto& [right, right_real] : x_lines) {
      if (right - left < 0.15 * cw || right - left > 0.92 * cw) continue;
      for (const auto& [top, top_real] : y_lines) {
        for (const auto& [bottom, bottom_real] : y_lines) {
          if (bottom - top < 0.15 * ch || bottom - top > 0.92 * ch) continue;
          const int real = left_real + right_real + top_real + bottom_real;
          // Two real sides only for a window in a corner of the content (one of each orientation).
          const bool corner = real == 2 && (left_real || right_real) && (top_real || bottom_real);
          if (real < 3 && !corner) continue;
          const double needed_support = corner ? std::max(options.window_support, 0.85) : options.window_support;
          const Rect r{left, top, right, bottom};
          if (r.area() < 0.04 * static_cast<double>(content_area) || r.area() > 0.85 * static_cast<double>(content_area)) continue;
          // The real sides, each with its persistent support (computed once per candidate).
          const struct {
            const LineSupport& lines;
            int32_t line, begin, end;
            bool real;
          } sides[4] = {{vertical, left, top, bottom, left_real}, {vertical, right, top, bottom, right_real},
                        {horizontal, top, left, right, top_real}, {horizontal, bottom, left, right, bottom_real}};
          double support[4] = {0, 0, 0, 0};
          double total = 0;
          bool ok = true;
          for (int i = 0; i < 4 && ok; ++i) {
            if (!sides[i].real) continue;
            support[i] = sides[i].lines.support(sides[i].line, sides[i].begin, sides[i].end);
            ok = support[i] >= needed_support;
            total += support[i];
          }
          const double score = total / 4.0;
          if (!ok || score <= best_score) continue;
          // Every real edge must have a changing side (bands of 4 pixels, 2 pixels off the edge).
          const int32_t b = 4, g = 2;
          bool moving = true;
          if (left_real) moving = moving && side_changes({left - g - b, top, left - g, bottom}, {left + g, top, left + g + b, bottom});
          if (right_real) moving = moving && side_changes({right - g - b, top, right - g, bottom}, {right + g, top, right + g + b, bottom});
          if (top_real) moving = moving && side_changes({left, top - g - b, right, top - g}, {left, top + g, right, top + g + b});
          if (bottom_real) moving = moving && side_changes({left, bottom - g - b, right, bottom - g}, {left, bottom + g, right, bottom + g + b});
          if (!moving) continue;
          // The window's content must change (a static box, logo or sticker is an overlay), and
          // each real side must stand out from its parallel lines (not a block lattice).
          if (change.mean({left + kWindowInset, top + kWindowInset, right - kWindowInset, bottom - kWindowInset}) < options.min_activity) {
            continue;
          }
          auto prominent = [&](const LineSupport& lines, int32_t line, int32_t begin, int32_t end, double s) {
            double before = 0, after = 0;  // one side suffices (a pixelised picture inside a plain one)
            for (int32_t d = kLatticeNear; d <= kLatticeFar; ++d) {
              if (line - d >= 1) before = std::max(before, lines.support(line - d, begin, end));
              if (line + d + 1 < static_cast<int32_t>(lines.lines)) after = std::max(after, lines.support(line + d, begin, end));
            }
            return s - std::min(before, after) >= kProminence;
          };
          bool standing = true;
          for (int i = 0; i < 4 && standing; ++i) {
            if (sides[i].real) standing = prominent(sides[i].lines, sides[i].line, sides[i].begin, sides[i].end, support[i]);
          }
          if (!standing) continue;
          best_score = score;
          best = r;
        }
      }
    }
  }
  if (best_score > 0) {
    // The inside must change between most consecutive frames, not on average: an overlay that
    // is static during part of the frames (while the rest of them change everywhere) is not a window.
    const Rect inner{best.x0 + kWindowInset, best.y0 + kWindowInset, best.x1 - kWindowInset, best.y1 - kWindowInset};
    std::vector<double> pair_change;
    const uint8_t* before = nullptr;
    for (int64_t f = 0; f < n; ++f) {
      if (layout.frames[static_cast<size_t>(f)].blank) continue;
      const uint8_t* image = luma + f * plane;
      if (before != nullptr) {
        int64_t sum = 0;
        for (int32_t y = inner.y0; y < inner.y1; ++y) {
          for (int32_t x = inner.x0; x < inner.x1; ++x) sum += std::abs(int(image[y * w + x]) - int(before[y * w + x]));
        }
        pair_change.push_back(static_cast<double>(sum) / static_cast<double>(std::max<int64_t>(inner.area(), 1)));
      }
      before = image;
    }
    if (!pair_change.empty()) {
      std::nth_element(pair_change.begin(), pair_change.begin() + pair_change.size() / 2, pair_change.end());
      if (pair_change[pair_change.size() / 2] < options.min_activity) best_score = 0;
    }
  }
  if (best_score > 0) {
    layout.has_window = true;
    layout.window = best;
    layout.window_confidence = static_cast<float>(best_score);
  }
  return layout;
}

}  // namespace vcd
