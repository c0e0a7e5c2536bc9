#include "preprocess.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "thread_pool.h"

namespace vcd {
namespace {

// Output rows per task: enough tasks to balance 224-row outputs over a few threads, few
// enough that the per-task overhead stays negligible.
constexpr int64_t kRowsPerTask = 32;

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) out << ",";
  out << ")";
  return out.str();
}

void check_image_size(int64_t height, int64_t width, const char* what, const std::vector<int64_t>& shape) {
  // Tap indices are int32; a frame side beyond that is certainly a mistake.
  constexpr int64_t kMaxSide = std::numeric_limits<int32_t>::max();
  if (height < 1 || width < 1 || height > kMaxSide || width > kMaxSide) {
    throw std::invalid_argument(std::string(what) + " must have height and width in [1, 2^31), got shape " +
                                shape_to_string(shape));
  }
}

// ---------------------------------------------------------------------------------------
// Tap tables (Note [Resampling] in preprocess.h)

// Per output index j of one axis: source indices index[offsets[j] .. offsets[j+1]) with
// weights summing to 1, in ascending index order.
struct AxisTaps {
  std::vector<int64_t> offsets{0};
  std::vector<int32_t> index;
  std::vector<float> weight;

  int64_t size() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int32_t lowest_index(int64_t j) const { return index[static_cast<size_t>(offsets[j])]; }
  int32_t highest_index(int64_t j) const { return index[static_cast<size_t>(offsets[j + 1] - 1)]; }
  void add(int64_t source_index, double w) {
    index.push_back(static_cast<int32_t>(source_index));
    weight.push_back(static_cast<float>(w));
  }
  void end_output() { offsets.push_back(static_cast<int64_t>(index.size())); }
};

// Taps for resampling the source window [start, start + length) to out_size pixels.
AxisTaps bilinear_taps(int64_t start, int64_t length, int64_t out_size) {
  AxisTaps taps;
  const double scale = static_cast<double>(length) / static_cast<double>(out_size);
  for (int64_t j = 0; j < out_size; ++j) {
    const double source = std::clamp((static_cast<double>(j) + 0.5) * scale - 0.5, 0.0,
                                     static_cast<double>(length - 1));
    const int64_t i0 = static_cast<int64_t>(std::floor(source));
    const double frac = source - static_cast<double>(i0);
    taps.add(start + i0, 1.0 - frac);
    if (frac > 0 && i0 + 1 < length) taps.add(start + i0 + 1, frac);
    taps.end_output();
  }
  return taps;
}

AxisTaps area_taps(int64_t start, int64_t length, int64_t out_size) {
  AxisTaps taps;
  const double scale = static_cast<double>(length) / static_cast<double>(out_size);
  for (int64_t j = 0; j < out_size; ++j) {
    const double lo = static_cast<double>(j) * scale;
    const double hi = j + 1 == out_size ? static_cast<double>(length) : static_cast<double>(j + 1) * scale;
    const int64_t first = static_cast<int64_t>(std::floor(lo));
    const int64_t last = std::min<int64_t>(static_cast<int64_t>(std::ceil(hi)), length);
    double total = 0;
    std::vector<double> overlaps;
    for (int64_t i = first; i < last; ++i) {
      overlaps.push_back(std::min(hi, static_cast<double>(i + 1)) - std::max(lo, static_cast<double>(i)));
      total += overlaps.back();
    }
    for (int64_t i = first; i < last; ++i) {
      const double overlap = overlaps[static_cast<size_t>(i - first)];
      if (overlap > 0) taps.add(start + i, overlap / total);
    }
    taps.end_output();
  }
  return taps;
}

AxisTaps axis_taps(Interpolation interpolation, int64_t start, int64_t length, int64_t out_size) {
  if (interpolation == Interpolation::kArea && out_size <= length) return area_taps(start, length, out_size);
  return bilinear_taps(start, length, out_size);
}

// Chroma taps for 4:2:0 planes: luma index i reads chroma i / 2 (nearest upsampling), so
// the luma taps fold onto chroma indices, merging neighbours that share a chroma sample.
AxisTaps fold_to_chroma(const AxisTaps& luma) {
  AxisTaps chroma;
  for (int64_t j = 0; j < luma.size(); ++j) {
    const int64_t row_begin = static_cast<int64_t>(chroma.index.size());
    for (int64_t t = luma.offsets[j]; t < luma.offsets[j + 1]; ++t) {
      const int32_t chroma_index = luma.index[static_cast<size_t>(t)] / 2;
      const float w = luma.weight[static_cast<size_t>(t)];
      if (static_cast<int64_t>(chroma.index.size()) > row_begin && chroma.index.back() == chroma_index) {
        chroma.weight.back() += w;
      } else {
        chroma.index.push_back(chroma_index);
        chroma.weight.push_back(w);
      }
    }
    chroma.end_output();
  }
  return chroma;
}

struct SourceWindow {
  int64_t y0, x0, height, width;
};

SourceWindow source_window(CropMode crop, int64_t height, int64_t width, int64_t out_height, int64_t out_width) {
  if (crop == CropMode::kSquash) return {0, 0, height, width};
  // Compare aspect ratios exactly in integers; the window side is rounded half up.
  if (width * out_height > height * out_width) {
    const double exact = static_cast<double>(height) * static_cast<double>(out_width) / static_cast<double>(out_height);
    const int64_t crop_width = std::clamp<int64_t>(static_cast<int64_t>(std::floor(exact + 0.5)), 1, width);
    return {0, (width - crop_width) / 2, height, crop_width};
  }
  const double exact = static_cast<double>(width) * static_cast<double>(out_height) / static_cast<double>(out_width);
  const int64_t crop_height = std::clamp<int64_t>(static_cast<int64_t>(std::floor(exact + 0.5)), 1, height);
  return {(height - crop_height) / 2, 0, crop_height, width};
}

// ---------------------------------------------------------------------------------------
// Separable resampling of one interleaved uint8 plane with `Channels` channels.

struct PlaneView {
  const uint8_t* frame;  // first row of this frame's plane
  int64_t row_stride;    // bytes between rows
};

// Writes output rows [y_begin, y_end) of the plane, each out_width * Channels floats with
// interleaved channels, to `rows`. Vertical pass first (contiguous, vectorisable rows over
// the columns the x taps read), then the horizontal pass on that one row, so each source
// row is read once per output row that uses it and no rows are resampled needlessly.
template <int Channels>
void resample_block(const PlaneView& plane, const AxisTaps& x_taps, const AxisTaps& y_taps, int64_t y_begin,
                    int64_t y_end, std::vector<float>& column_buffer, float* rows) {
  const int64_t out_width = x_taps.size();
  const int64_t column_lo = x_taps.lowest_index(0);
  const int64_t span = (x_taps.highest_index(out_width - 1) - column_lo + 1) * Channels;
  column_buffer.resize(static_cast<size_t>(span));
  float* vertical = column_buffer.data();
  const int32_t* x_index = x_taps.index.data();
  const float* x_weight = x_taps.weight.data();
  for (int64_t y = y_begin; y < y_end; ++y) {
    std::fill(vertical, vertical + span, 0.0f);
    for (int64_t t = y_taps.offsets[y]; t < y_taps.offsets[y + 1]; ++t) {
      const float w = y_taps.weight[static_cast<size_t>(t)];
      const uint8_t* source = plane.frame + y_taps.index[static_cast<size_t>(t)] * plane.row_stride +
                              column_lo * Channels;
      for (int64_t k = 0; k < span; ++k) vertical[k] += w * static_cast<float>(source[k]);
    }
    float* out = rows + (y - y_begin) * out_width * Channels;
    for (int64_t x = 0; x < out_width; ++x) {
      float acc[Channels] = {};
      for (int64_t t = x_taps.offsets[x]; t < x_taps.offsets[x + 1]; ++t) {
        const float* pixel = vertical + (static_cast<int64_t>(x_index[t]) - column_lo) * Channels;
        for (int c = 0; c < Channels; ++c) acc[c] += x_weight[t] * pixel[c];
      }
      for (int c = 0; c < Channels; ++c) out[x * Channels + c] = acc[c];
    }
  }
}

inline void store(float value, uint8_t* out) {
  *out = static_cast<uint8_t>(std::clamp(value, 0.0f, 255.0f) + 0.5f);
}
inline void store(float value, float* out) { *out = std::clamp(value, 0.0f, 255.0f); }

struct Scratch {
  std::vector<float> column_buffer;  // one vertically resampled row of the source window
  std::vector<float> luma_or_rgb;  // block rows of Y (1 channel) or RGB (3 channels)
  std::vector<float> chroma_u;     // block rows of U (YUV420p) or interleaved UV (NV12)
  std::vector<float> chroma_v;     // block rows of V (YUV420p)
};

struct OutputGeometry {
  int64_t height, width, blocks_per_frame;
  int64_t plane_size() const { return height * width; }
};

OutputGeometry output_geometry(const ResizeOptions& options) {
  return {options.out_height, options.out_width, (options.out_height + kRowsPerTask - 1) / kRowsPerTask};
}

template <typename OutT>
void resize_rgb_typed(const uint8_t* frames, const FrameBatchShape& shape, const ResizeOptions& options, OutT* out) {
  const OutputGeometry geometry = output_geometry(options);
  const SourceWindow window = source_window(options.crop, shape.height, shape.width, geometry.height, geometry.width);
  const AxisTaps x_taps = axis_taps(options.interpolation, window.x0, window.width, geometry.width);
  const AxisTaps y_taps = axis_taps(options.interpolation, window.y0, window.height, geometry.height);
  const int64_t frame_bytes = shape.height * shape.width * 3;

  parallel_for<Scratch>(shape.num_frames * geometry.blocks_per_frame, options.num_threads,
                        [&](int64_t task, Scratch& scratch) {
    const int64_t n = task / geometry.blocks_per_frame;
    const int64_t y_begin = (task % geometry.blocks_per_frame) * kRowsPerTask;
    const int64_t y_end = std::min(y_begin + kRowsPerTask, geometry.height);
    scratch.luma_or_rgb.resize(static_cast<size_t>((y_end - y_begin) * geometry.width * 3));
    const PlaneView plane{frames + n * frame_bytes, shape.width * 3};
    resample_block<3>(plane, x_taps, y_taps, y_begin, y_end, scratch.column_buffer, scratch.luma_or_rgb.data());
    OutT* frame_out = out + n * 3 * geometry.plane_size();
    for (int64_t y = y_begin; y < y_end; ++y) {
      const float* rgb = scratch.luma_or_rgb.data() + (y - y_begin) * geometry.width * 3;
      for (int c = 0; c < 3; ++c) {
        OutT* out_row = frame_out + c * geometry.plane_size() + y * geometry.width;
        for (int64_t x = 0; x < geometry.width; ++x) store(rgb[x * 3 + c], out_row + x);
      }
    }
  });
}

// Converts resampled Y/U/V rows to RGB (Note [YUV conversion]) and stores them.
template <typename OutT>
void store_yuv_rows(const float* luma, const float* u, const float* v, int64_t chroma_step,
                    const OutputGeometry& geometry, int64_t y_begin, int64_t y_end, OutT* frame_out) {
  for (int64_t y = y_begin; y < y_end; ++y) {
    const int64_t row = (y - y_begin) * geometry.width;
    OutT* r_out = frame_out + y * geometry.width;
    OutT* g_out = r_out + geometry.plane_size();
    OutT* b_out = g_out + geometry.plane_size();
    for (int64_t x = 0; x < geometry.width; ++x) {
      const float luma_term = 1.164383f * (luma[row + x] - 16.0f);
      const float cb = u[(row + x) * chroma_step] - 128.0f;
      const float cr = v[(row + x) * chroma_step] - 128.0f;
      store(luma_term + 1.596027f * cr, r_out + x);
      store(luma_term - 0.391762f * cb - 0.812968f * cr, g_out + x);
      store(luma_term + 2.017232f * cb, b_out + x);
    }
  }
}

// `uv_interleaved`: NV12 (u points at the interleaved plane, v unused) vs YUV420p.
template <typename OutT>
void resize_yuv_typed(const uint8_t* y_plane, const uint8_t* u_plane, const uint8_t* v_plane, bool uv_interleaved,
                      const FrameBatchShape& shape, const ResizeOptions& options, OutT* out) {
  const OutputGeometry geometry = output_geometry(options);
  const SourceWindow window = source_window(options.crop, shape.height, shape.width, geometry.height, geometry.width);
  const AxisTaps x_taps = axis_taps(options.interpolation, window.x0, window.width, geometry.width);
  const AxisTaps y_taps = axis_taps(options.interpolation, window.y0, window.height, geometry.height);
  const AxisTaps chroma_x_taps = fold_to_chroma(x_taps);
  const AxisTaps chroma_y_taps = fold_to_chroma(y_taps);
  const int64_t chroma_height = (shape.height + 1) / 2;
  const int64_t chroma_width = (shape.width + 1) / 2;
  const int64_t luma_frame = shape.height * shape.width;
  const int64_t chroma_frame = chroma_height * chroma_width;

  parallel_for<Scratch>(shape.num_frames * geometry.blocks_per_frame, options.num_threads,
                        [&](int64_t task, Scratch& scratch) {
    const int64_t n = task / geometry.blocks_per_frame;
    const int64_t y_begin = (task % geometry.blocks_per_frame) * kRowsPerTask;
    const int64_t y_end = std::min(y_begin + kRowsPerTask, geometry.height);
    const size_t block_pixels = static_cast<size_t>((y_end - y_begin) * geometry.width);
    scratch.luma_or_rgb.resize(block_pixels);
    resample_block<1>(PlaneView{y_plane + n * luma_frame, shape.width}, x_taps, y_taps, y_begin, y_end,
                      scratch.column_buffer, scratch.luma_or_rgb.data());
    OutT* frame_out = out + n * 3 * geometry.plane_size();
    if (uv_interleaved) {
      scratch.chroma_u.resize(2 * block_pixels);
      resample_block<2>(PlaneView{u_plane + n * 2 * chroma_frame, 2 * chroma_width}, chroma_x_taps, chroma_y_taps,
                        y_begin, y_end, scratch.column_buffer, scratch.chroma_u.data());
      store_yuv_rows(scratch.luma_or_rgb.data(), scratch.chroma_u.data(), scratch.chroma_u.data() + 1, 2, geometry,
                     y_begin, y_end, frame_out);
    } else {
      scratch.chroma_u.resize(block_pixels);
      scratch.chroma_v.resize(block_pixels);
      resample_block<1>(PlaneView{u_plane + n * chroma_frame, chroma_width}, chroma_x_taps, chroma_y_taps, y_begin,
                        y_end, scratch.column_buffer, scratch.chroma_u.data());
      resample_block<1>(PlaneView{v_plane + n * chroma_frame, chroma_width}, chroma_x_taps, chroma_y_taps, y_begin,
                        y_end, scratch.column_buffer, scratch.chroma_v.data());
      store_yuv_rows(scratch.luma_or_rgb.data(), scratch.chroma_u.data(), scratch.chroma_v.data(), 1, geometry,
                     y_begin, y_end, frame_out);
    }
  });
}

void check_plane_shape(const std::vector<int64_t>& shape, const std::vector<int64_t>& expected, const char* name,
                       const char* layout) {
  if (shape != expected) {
    throw std::invalid_argument(std::string(name) + " must have shape " + layout + " = " +
                                shape_to_string(expected) + " for the given y plane, got " + shape_to_string(shape));
  }
}

FrameBatchShape check_luma_shape(const std::vector<int64_t>& y_shape) {
  if (y_shape.size() != 3) {
    throw std::invalid_argument("y must have shape (N, H, W), got " + shape_to_string(y_shape));
  }
  check_image_size(y_shape[1], y_shape[2], "y", y_shape);
  if (y_shape[0] < 0) throw std::invalid_argument("y has a negative frame count: " + shape_to_string(y_shape));
  return {y_shape[0], y_shape[1], y_shape[2]};
}

}  // namespace

Interpolation parse_interpolation(const std::string& name) {
  if (name == "bilinear") return Interpolation::kBilinear;
  if (name == "area") return Interpolation::kArea;
  throw std::invalid_argument("interpolation must be one of 'bilinear', 'area', got '" + name + "'");
}

CropMode parse_crop_mode(const std::string& name) {
  if (name == "squash") return CropMode::kSquash;
  if (name == "center") return CropMode::kCenter;
  throw std::invalid_argument("crop must be one of 'squash', 'center', got '" + name + "'");
}

OutputType parse_output_type(const std::string& name) {
  if (name == "uint8") return OutputType::kUint8;
  if (name == "float32") return OutputType::kFloat32;
  throw std::invalid_argument("out_dtype must be one of 'uint8', 'float32', got '" + name + "'");
}

FrameBatchShape check_rgb_shape(const std::vector<int64_t>& frames_shape) {
  if (frames_shape.size() != 4 || frames_shape[3] != 3 || frames_shape[0] < 0) {
    throw std::invalid_argument("frames must have shape (N, H, W, 3), got " + shape_to_string(frames_shape));
  }
  check_image_size(frames_shape[1], frames_shape[2], "frames", frames_shape);
  return {frames_shape[0], frames_shape[1], frames_shape[2]};
}

FrameBatchShape check_nv12_shapes(const std::vector<int64_t>& y_shape, const std::vector<int64_t>& uv_shape) {
  const FrameBatchShape shape = check_luma_shape(y_shape);
  check_plane_shape(uv_shape, {shape.num_frames, (shape.height + 1) / 2, 2 * ((shape.width + 1) / 2)}, "uv",
                    "(N, ceil(H/2), 2*ceil(W/2))");
  return shape;
}

FrameBatchShape check_yuv420p_shapes(const std::vector<int64_t>& y_shape, const std::vector<int64_t>& u_shape,
                                     const std::vector<int64_t>& v_shape) {
  const FrameBatchShape shape = check_luma_shape(y_shape);
  const std::vector<int64_t> chroma{shape.num_frames, (shape.height + 1) / 2, (shape.width + 1) / 2};
  check_plane_shape(u_shape, chroma, "u", "(N, ceil(H/2), ceil(W/2))");
  check_plane_shape(v_shape, chroma, "v", "(N, ceil(H/2), ceil(W/2))");
  return shape;
}

void check_resize_options(const ResizeOptions& options) {
  constexpr int64_t kMaxSide = std::numeric_limits<int32_t>::max();
  if (options.out_height < 1 || options.out_width < 1 || options.out_height > kMaxSide ||
      options.out_width > kMaxSide) {
    throw std::invalid_argument("out_height and out_width must be in [1, 2^31), got " +
                                std::to_string(options.out_height) + " x " + std::to_string(options.out_width));
  }
  if (options.num_threads < 0) {
    throw std::invalid_argument("num_threads must be >= 0 (0 = all cores), got " +
                                std::to_string(options.num_threads));
  }
}

void resize_rgb(const uint8_t* frames, const std::vector<int64_t>& frames_shape, const ResizeOptions& options,
                void* out) {
  const FrameBatchShape shape = check_rgb_shape(frames_shape);
  check_resize_options(options);
  if (options.out_type == OutputType::kUint8) {
    resize_rgb_typed(frames, shape, options, static_cast<uint8_t*>(out));
  } else {
    resize_rgb_typed(frames, shape, options, static_cast<float*>(out));
  }
}

void resize_nv12(const uint8_t* y, const std::vector<int64_t>& y_shape, const uint8_t* uv,
                 const std::vector<int64_t>& uv_shape, const ResizeOptions& options, void* out) {
  const FrameBatchShape shape = check_nv12_shapes(y_shape, uv_shape);
  check_resize_options(options);
  if (options.out_type == OutputType::kUint8) {
    resize_yuv_typed(y, uv, nullptr, true, shape, options, static_cast<uint8_t*>(out));
  } else {
    resize_yuv_typed(y, uv, nullptr, true, shape, options, static_cast<float*>(out));
  }
}

void resize_yuv420p(const uint8_t* y, const std::vector<int64_t>& y_shape, const uint8_t* u,
                    const std::vector<int64_t>& u_shape, const uint8_t* v, const std::vector<int64_t>& v_shape,
                    const ResizeOptions& options, void* out) {
  const FrameBatchShape shape = check_yuv420p_shapes(y_shape, u_shape, v_shape);
  check_resize_options(options);
  if (options.out_type == OutputType::kUint8) {
    resize_yuv_typed(y, u, v, false, shape, options, static_cast<uint8_t*>(out));
  } else {
    resize_yuv_typed(y, u, v, false, shape, options, static_cast<float*>(out));
  }
}

}  // namespace vcd
