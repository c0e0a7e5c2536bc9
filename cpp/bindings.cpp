// The only file that knows about Python: binds the vcd C++ core as the `vcd_core` module.
//
// Conventions (see STYLE-ANCHORS): numpy arrays in and out; inputs are used in place when
// they are C-contiguous with the right dtype (otherwise copied once); outputs are numpy
// arrays allocated here and written in place by the core with the GIL released.
// std::invalid_argument from the core becomes ValueError (pybind11's built-in
// translation), keeping the core's message with the offending values.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "layout.h"
#include "preprocess.h"
#include "sampler.h"
#include "thread_pool.h"
#if defined(VCD_WITH_KERNELS_ON_HOST)
#include "cuda/kernels_on_host.h"
#endif

namespace py = pybind11;

namespace {

#ifndef VCD_CORE_VERSION
#define VCD_CORE_VERSION "0.1.0"
#endif

// Releases the GIL around a compute call, like py::gil_scoped_release, but safe when the
// interpreter starts finalizing meanwhile: CPython 3.11-3.13 end a thread that takes the GIL
// back then with pthread_exit, whose forced unwind through a noexcept destructor calls
// std::terminate (the process aborted at exit whenever daemon threads were resizing). Such
// a thread is parked instead (the process is exiting anyway); and the destructor is
// noexcept(false), so if finalization begins between the check and PyEval_RestoreThread the
// unwind passes through (pybind11's dispatcher rethrows abi::__forced_unwind).
class GilRelease {
 public:
  GilRelease() : state_(PyEval_SaveThread()) {}
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;
  ~GilRelease() noexcept(false) {
    while (interpreter_finalizing()) std::this_thread::sleep_for(std::chrono::seconds(1));
    PyEval_RestoreThread(state_);
  }

 private:
  static bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
  }
  PyThreadState* state_;
};

using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using ByteArray = py::array_t<uint8_t, py::array::c_style>;

void check_1d(const DoubleArray& array, const char* name) {
  if (array.ndim() != 1) {
    throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(array.ndim()) +
                          " dimensions");
  }
}

// A C-contiguous uint8 view of `plane`. Other dtypes are rejected rather than cast, since
// casting e.g. float frames in 0..1 to uint8 would silently produce black images.
ByteArray as_uint8_plane(const py::array& plane, const char* name) {
  if (!plane.dtype().is(py::dtype::of<uint8_t>())) {
    throw py::value_error(std::string(name) + " must have dtype uint8, got " +
                          py::str(plane.dtype()).cast<std::string>());
  }
  return ByteArray::ensure(plane);
}

std::vector<int64_t> shape_of(const py::array& array) {
  return std::vector<int64_t>(array.shape(), array.shape() + array.ndim());
}

py::tuple selection_to_numpy(const vcd::SampleSelection& selection) {
  const auto count = static_cast<py::ssize_t>(selection.frame_indices.size());
  py::array_t<int64_t> indices(count);
  py::array_t<double> intervals({count, static_cast<py::ssize_t>(2)});
  auto index_view = indices.mutable_unchecked<1>();
  auto interval_view = intervals.mutable_unchecked<2>();
  for (py::ssize_t k = 0; k < count; ++k) {
    index_view(k) = selection.frame_indices[static_cast<size_t>(k)];
    interval_view(k, 0) = selection.starts[static_cast<size_t>(k)];
    interval_view(k, 1) = selection.ends[static_cast<size_t>(k)];
  }
  return py::make_tuple(std::move(indices), std::move(intervals));
}

vcd::ResizeOptions make_options(int64_t out_height, int64_t out_width, const std::string& interpolation,
                                const std::string& crop, const std::string& out_dtype, int num_threads) {
  vcd::ResizeOptions options;
  options.out_height = out_height;
  options.out_width = out_width;
  options.interpolation = vcd::parse_interpolation(interpolation);
  options.crop = vcd::parse_crop_mode(crop);
  options.out_type = vcd::parse_output_type(out_dtype);
  options.num_threads = num_threads;
  vcd::check_resize_options(options);
  return options;
}

py::array allocate_output(const vcd::FrameBatchShape& shape, const vcd::ResizeOptions& options) {
  const std::vector<py::ssize_t> dims{static_cast<py::ssize_t>(shape.num_frames), 3,
                                      static_cast<py::ssize_t>(options.out_height),
                                      static_cast<py::ssize_t>(options.out_width)};
  if (options.out_type == vcd::OutputType::kUint8) return py::array_t<uint8_t>(dims);
  return py::array_t<float>(dims);
}

// Sampler arguments arrive as float64 C-contiguous arrays (pybind11 converts lists and
// other numeric dtypes once).
py::tuple sample_uniform(const DoubleArray& pts_array, double fps, double duration) {
  check_1d(pts_array, "pts");
  vcd::SampleSelection selection;
  {
    GilRelease release;
    selection = vcd::sample_uniform(pts_array.data(), pts_array.shape(0), fps, duration);
  }
  return selection_to_numpy(selection);
}

py::tuple sample_at_times(const DoubleArray& pts_array, const DoubleArray& times_array, double duration) {
  check_1d(pts_array, "pts");
  check_1d(times_array, "times");
  vcd::SampleSelection selection;
  {
    GilRelease release;
    selection = vcd::sample_at_times(pts_array.data(), pts_array.shape(0), times_array.data(),
                                     times_array.shape(0), duration);
  }
  return selection_to_numpy(selection);
}

py::array resize_rgb(const py::array& frames, int64_t out_height, int64_t out_width, const std::string& interpolation,
                     const std::string& crop, const std::string& out_dtype, int num_threads) {
  const vcd::ResizeOptions options = make_options(out_height, out_width, interpolation, crop, out_dtype, num_threads);
  const ByteArray frames_u8 = as_uint8_plane(frames, "frames");
  const std::vector<int64_t> frames_shape = shape_of(frames_u8);
  py::array out = allocate_output(vcd::check_rgb_shape(frames_shape), options);
  void* out_data = out.mutable_data();
  {
    GilRelease release;
    vcd::resize_rgb(frames_u8.data(), frames_shape, options, out_data);
  }
  return out;
}

py::array resize_nv12(const py::array& y, const py::array& uv, int64_t out_height, int64_t out_width,
                      const std::string& interpolation, const std::string& crop, const std::string& out_dtype,
                      int num_threads) {
  const vcd::ResizeOptions options = make_options(out_height, out_width, interpolation, crop, out_dtype, num_threads);
  const ByteArray y_u8 = as_uint8_plane(y, "y");
  const ByteArray uv_u8 = as_uint8_plane(uv, "uv");
  const std::vector<int64_t> y_shape = shape_of(y_u8);
  const std::vector<int64_t> uv_shape = shape_of(uv_u8);
  py::array out = allocate_output(vcd::check_nv12_shapes(y_shape, uv_shape), options);
  void* out_data = out.mutable_data();
  {
    GilRelease release;
    vcd::resize_nv12(y_u8.data(), y_shape, uv_u8.data(), uv_shape, options, out_data);
  }
  return out;
}

py::array resize_yuv420p(const py::array& y, const py::array& u, const py::array& v, int64_t out_height,
                         int64_t out_width, const std::string& interpolation, const std::string& crop,
                         const std::string& out_dtype, int num_threads) {
  const vcd::ResizeOptions options = make_options(out_height, out_width, interpolation, crop, out_dtype, num_threads);
  const ByteArray y_u8 = as_uint8_plane(y, "y");
  const ByteArray u_u8 = as_uint8_plane(u, "u");
  const ByteArray v_u8 = as_uint8_plane(v, "v");
  const std::vector<int64_t> y_shape = shape_of(y_u8);
  const std::vector<int64_t> u_shape = shape_of(u_u8);
  const std::vector<int64_t> v_shape = shape_of(v_u8);
  py::array out = allocate_output(vcd::check_yuv420p_shapes(y_shape, u_shape, v_shape), options);
  void* out_data = out.mutable_data();
  {
    GilRelease release;
    vcd::resize_yuv420p(y_u8.data(), y_shape, u_u8.data(), u_shape, v_u8.data(), v_shape, options, out_data);
  }
  return out;
}

#if defined(VCD_WITH_KERNELS_ON_HOST)
// The CUDA kernel source run on the CPU (cpp/cuda/kernels_on_host.h), for tests.
using Int32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

struct HostTaps {
  Int32Array offsets, index;
  FloatArray weight;
};

// Checks one tap table against the output size and the source extent it may read, so a
// bad table is a ValueError here rather than an out-of-bounds read in the kernel.
HostTaps check_taps(const py::tuple& taps, int64_t out_size, int64_t source_size, const char* name) {
  if (taps.size() != 3) throw py::value_error(std::string(name) + " must be (offsets, index, weight)");
  HostTaps t{taps[0].cast<Int32Array>(), taps[1].cast<Int32Array>(), taps[2].cast<FloatArray>()};
  if (t.offsets.ndim() != 1 || t.offsets.shape(0) != out_size + 1 || t.index.ndim() != 1 || t.weight.ndim() != 1 ||
      t.index.shape(0) != t.weight.shape(0)) {
    throw py::value_error(std::string(name) + ": offsets must have out_size + 1 = " + std::to_string(out_size + 1) +
                          " entries and index/weight the same length");
  }
  const int32_t* offsets = t.offsets.data();
  if (offsets[0] != 0 || offsets[out_size] != t.index.shape(0)) {
    throw py::value_error(std::string(name) + ": offsets must run from 0 to len(index)");
  }
  for (int64_t j = 0; j < out_size; ++j) {
    if (offsets[j] > offsets[j + 1]) throw py::value_error(std::string(name) + ": offsets must not decrease");
  }
  for (py::ssize_t k = 0; k < t.index.shape(0); ++k) {
    if (t.index.data()[k] < 0 || t.index.data()[k] >= source_size) {
      throw py::value_error(std::string(name) + ": index " + std::to_string(t.index.data()[k]) + " outside [0, " +
                            std::to_string(source_size) + ")");
    }
  }
  return t;
}

vcd::cuda_on_host::TapTable table(const HostTaps& t) { return {t.offsets.data(), t.index.data(), t.weight.data()}; }

py::array host_nv12_to_rgb_planar_u8(const py::array& y_plane, const py::array& uv_plane, const py::tuple& x,
                                     const py::tuple& y, const py::tuple& chroma_x, const py::tuple& chroma_y,
                                     int out_height, int out_width, int rotation, int block_x, int block_y) {
  const ByteArray y_u8 = as_uint8_plane(y_plane, "y_plane");
  const ByteArray uv_u8 = as_uint8_plane(uv_plane, "uv_plane");
  if (y_u8.ndim() != 2 || uv_u8.ndim() != 2) throw py::value_error("y_plane and uv_plane must be 2-D (rows, pitch)");
  if (out_height < 1 || out_width < 1) throw py::value_error("out_height and out_width must be >= 1");
  const int64_t rows = y_u8.shape(0), pitch = y_u8.shape(1), chroma_rows = uv_u8.shape(0);
  const int64_t chroma_pitch = uv_u8.shape(1);
  const HostTaps tx = check_taps(x, out_width, pitch, "x");
  const HostTaps ty = check_taps(y, out_height, rows, "y");
  const HostTaps tcx = check_taps(chroma_x, out_width, chroma_pitch / 2, "chroma_x");
  const HostTaps tcy = check_taps(chroma_y, out_height, chroma_rows, "chroma_y");
  const bool swapped = (rotation & 1) != 0;
  py::array_t<uint8_t> out({py::ssize_t{3}, static_cast<py::ssize_t>(swapped ? out_width : out_height),
                            static_cast<py::ssize_t>(swapped ? out_height : out_width)});
  uint8_t* out_data = out.mutable_data();
  {
    GilRelease release;
    vcd::cuda_on_host::nv12_to_rgb_planar_u8(y_u8.data(), static_cast<int>(pitch), uv_u8.data(),
                                             static_cast<int>(chroma_pitch), table(tx), table(ty), table(tcx),
                                             table(tcy), out_height, out_width, rotation, out_data, block_x, block_y);
  }
  return out;
}

py::array host_u8_to_f32(const py::array& src, int blocks, int threads) {
  const ByteArray src_u8 = as_uint8_plane(src, "src");
  py::array_t<float> out(src_u8.size());
  float* out_data = out.mutable_data();
  {
    GilRelease release;
    vcd::cuda_on_host::u8_to_f32(src_u8.data(), out_data, src_u8.size(), blocks, threads);
  }
  return out;
}
#endif  // VCD_WITH_KERNELS_ON_HOST

// Layout analysis (cpp/layout.h): one video's frames in, the plain VideoLayout struct out.
// Vectors go out as Python lists (no pybind11/stl.h, so no implicit conversions elsewhere).
template <typename T>
py::list as_list(const std::vector<T>& values) {
  py::list out;
  for (const T& v : values) out.append(py::cast(v));
  return out;
}

vcd::VideoLayout analyze_layout(const py::array& frames, int border_tolerance, double border_fraction, int min_border,
                                int step_threshold, double seam_coverage, double edge_persistence,
                                double window_support, double min_texture, double min_activity,
                                int max_cells_per_axis, int min_frames) {
  vcd::LayoutOptions options;
  options.border_tolerance = border_tolerance;
  options.border_fraction = border_fraction;
  options.min_border = min_border;
  options.step_threshold = step_threshold;
  options.seam_coverage = seam_coverage;
  options.edge_persistence = edge_persistence;
  options.window_support = window_support;
  options.min_texture = min_texture;
  options.min_activity = min_activity;
  options.max_cells_per_axis = max_cells_per_axis;
  options.min_frames = min_frames;
  const ByteArray frames_u8 = as_uint8_plane(frames, "frames");
  const std::vector<int64_t> shape = shape_of(frames_u8);
  GilRelease release;
  return vcd::analyze_layout(frames_u8.data(), shape, options);
}

}  // namespace

PYBIND11_MODULE(vcd_core, m) {
  m.doc() = "C++ core of vcd-runtime: frame sampling and CPU frame preprocessing.";
  m.attr("__version__") = VCD_CORE_VERSION;

  m.def("sample_uniform", &sample_uniform, py::arg("pts"), py::arg("fps"), py::arg("duration") = -1.0,
        R"doc(Select the frames shown at t = k / fps (relative to the first frame).

Args:
    pts: (F,) float64 presentation timestamps in seconds, in decode order; NaN never selected.
    fps: samples per second, finite and > 0.
    duration: video length in seconds; <= 0 derives it from pts.

Returns:
    (indices (K,) int64 into pts, intervals (K, 2) float64 [start, end) seconds), sorted by time;
    consecutive samples of the same frame are merged.)doc");
  m.def("sample_at_times", &sample_at_times, py::arg("pts"), py::arg("times"), py::arg("duration") = -1.0,
        R"doc(Select the frames shown at explicit relative times (sorted, deduplicated, clipped to the video).

Returns the same (indices, intervals) pair as sample_uniform.)doc");

  const char* resize_doc_tail = R"doc(
Args:
    out_height, out_width: output size in pixels.
    interpolation: 'area' (exact box filter; bilinear on upscaled axes) or 'bilinear' (half-pixel centres).
    crop: 'squash' (resize the whole frame) or 'center' (centre window with the output's aspect ratio).
    out_dtype: 'uint8' (rounded) or 'float32' (0..255, unrounded).
    num_threads: at most this many threads of the shared pool (see set_num_threads), caller included;
        0 = the whole pool; the result does not depend on it.

Returns:
    (N, 3, out_height, out_width) RGB array of out_dtype.)doc";
  // Static: pybind11 keeps pointers to docstrings for the module's lifetime.
  static const std::string rgb_doc = std::string("Resize RGB frames (N, H, W, 3) uint8 to planar RGB.\n") +
                                     resize_doc_tail;
  static const std::string nv12_doc =
      std::string("Convert NV12 frames (y (N, H, W), uv (N, ceil(H/2), 2*ceil(W/2))) to resized planar RGB "
                  "(BT.601 limited range, nearest chroma upsampling).\n") +
      resize_doc_tail;
  static const std::string yuv420p_doc =
      std::string("Convert YUV420p frames (y (N, H, W), u and v (N, ceil(H/2), ceil(W/2))) to resized planar RGB "
                  "(BT.601 limited range, nearest chroma upsampling).\n") +
      resize_doc_tail;
  m.def("resize_rgb", &resize_rgb, py::arg("frames"), py::arg("out_height"), py::arg("out_width"),
        py::arg("interpolation") = "area", py::arg("crop") = "squash", py::arg("out_dtype") = "uint8",
        py::arg("num_threads") = 0,
        rgb_doc.c_str());
  m.def("resize_nv12", &resize_nv12, py::arg("y"), py::arg("uv"), py::arg("out_height"), py::arg("out_width"),
        py::arg("interpolation") = "area", py::arg("crop") = "squash", py::arg("out_dtype") = "uint8",
        py::arg("num_threads") = 0,
        nv12_doc.c_str());
  m.def("resize_yuv420p", &resize_yuv420p, py::arg("y"), py::arg("u"), py::arg("v"), py::arg("out_height"),
        py::arg("out_width"), py::arg("interpolation") = "area", py::arg("crop") = "squash",
        py::arg("out_dtype") = "uint8", py::arg("num_threads") = 0,
        yuv420p_doc.c_str());

  py::class_<vcd::Rect>(m, "Rect", "Half-open pixel rectangle [x0, x1) x [y0, y1) in frame coordinates.")
      .def_readonly("x0", &vcd::Rect::x0)
      .def_readonly("y0", &vcd::Rect::y0)
      .def_readonly("x1", &vcd::Rect::x1)
      .def_readonly("y1", &vcd::Rect::y1)
      .def_property_readonly("width", &vcd::Rect::width)
      .def_property_readonly("height", &vcd::Rect::height)
      .def("as_tuple", [](const vcd::Rect& r) { return py::make_tuple(r.x0, r.y0, r.x1, r.y1); },
           "(x0, y0, x1, y1)")
      .def("__repr__", [](const vcd::Rect& r) {
        return "Rect(x0=" + std::to_string(r.x0) + ", y0=" + std::to_string(r.y0) + ", x1=" + std::to_string(r.x1) +
               ", y1=" + std::to_string(r.y1) + ")";
      });
  py::class_<vcd::FrameLayout>(m, "FrameLayout", "What one frame shows (see cpp/layout.h).")
      .def_readonly("content", &vcd::FrameLayout::content)
      .def_readonly("blank", &vcd::FrameLayout::blank)
      .def_readonly("vertical_seam", &vcd::FrameLayout::vertical_seam)
      .def_readonly("vertical_coverage", &vcd::FrameLayout::vertical_coverage)
      .def_readonly("horizontal_seam", &vcd::FrameLayout::horizontal_seam)
      .def_readonly("horizontal_coverage", &vcd::FrameLayout::horizontal_coverage);
  py::class_<vcd::VideoLayout>(m, "VideoLayout", "The per-video layout decision (see cpp/layout.h).")
      .def_readonly("frame_height", &vcd::VideoLayout::frame_height)
      .def_readonly("frame_width", &vcd::VideoLayout::frame_width)
      .def_readonly("usable_frames", &vcd::VideoLayout::usable_frames)
      .def_readonly("content", &vcd::VideoLayout::content)
      .def_readonly("has_border", &vcd::VideoLayout::has_border)
      .def_readonly("border_confidence", &vcd::VideoLayout::border_confidence)
      .def_readonly("grid_rows", &vcd::VideoLayout::grid_rows)
      .def_readonly("grid_cols", &vcd::VideoLayout::grid_cols)
      .def_property_readonly("column_seams", [](const vcd::VideoLayout& l) { return as_list(l.column_seams); })
      .def_property_readonly("row_seams", [](const vcd::VideoLayout& l) { return as_list(l.row_seams); })
      .def_property_readonly("cells", [](const vcd::VideoLayout& l) { return as_list(l.cells); })
      .def_readonly("grid_confidence", &vcd::VideoLayout::grid_confidence)
      .def_readonly("has_window", &vcd::VideoLayout::has_window)
      .def_readonly("window", &vcd::VideoLayout::window)
      .def_readonly("window_confidence", &vcd::VideoLayout::window_confidence)
      .def_readonly("rotated", &vcd::VideoLayout::rotated)
      .def_readonly("rotated_confidence", &vcd::VideoLayout::rotated_confidence)
      .def_readonly("activity", &vcd::VideoLayout::activity)
      .def_property_readonly("frames", [](const vcd::VideoLayout& l) { return as_list(l.frames); });
  m.def("analyze_layout", &analyze_layout, py::arg("frames"), py::arg("border_tolerance") = 12,
        py::arg("border_fraction") = 0.97, py::arg("min_border") = 3, py::arg("step_threshold") = 30,
        py::arg("seam_coverage") = 0.5, py::arg("edge_persistence") = 0.5, py::arg("window_support") = 0.7,
        py::arg("min_texture") = 3.0, py::arg("min_activity") = 3.0, py::arg("max_cells_per_axis") = 3,
        py::arg("min_frames") = 3,
        R"doc(Find where the picture is inside one video's sampled frames: uniform borders, grid seams, a window.

Args:
    frames: (N, H, W) luma or (N, 3, H, W) planar RGB, uint8, in time order (one video only).
    border_tolerance ... min_frames: see LayoutOptions in cpp/layout.h (Note [Layout evidence]).

Returns:
    VideoLayout: content rectangle, cells, window, rotation hint, their confidences and the
    per-frame FrameLayout list; rectangles in frame coordinates. The GIL is released meanwhile.)doc");

  m.def("set_num_threads", &vcd::set_num_threads, py::arg("num_threads"), py::call_guard<GilRelease>(),
        R"doc(Size the process's resize thread pool: num_threads threads (the calling one included), or 0 for the
CPUs in the process's affinity mask (the default). Waits for the current workers to finish their task.)doc");
  m.def("get_num_threads", &vcd::get_num_threads, py::call_guard<GilRelease>(),
        R"doc(Threads one resize call may use (the pool's size, the calling thread included).)doc");

#if defined(VCD_WITH_KERNELS_ON_HOST)
  py::module_ host = m.def_submodule(
      "_cuda_kernels_on_host",
      "Tests only: cpp/cuda/preprocess_kernels.cu compiled as host C++ (cpp/cuda/host_shim.h), run on the CPU.");
  host.def("nv12_to_rgb_planar_u8", &host_nv12_to_rgb_planar_u8, py::arg("y_plane"), py::arg("uv_plane"), py::arg("x"),
           py::arg("y"), py::arg("chroma_x"), py::arg("chroma_y"), py::arg("out_height"), py::arg("out_width"),
           py::arg("rotation") = 0, py::arg("block_x") = 32, py::arg("block_y") = 8,
           R"doc(Run vcd_nv12_to_rgb_planar_u8 on the CPU.

Args:
    y_plane: (rows, pitch) uint8 luma; the pitch is the row length.
    uv_plane: (chroma rows, chroma pitch) uint8 interleaved U, V.
    x, y, chroma_x, chroma_y: (offsets int32, index int32, weight float32) tap tables.
    out_height, out_width: size before rotation.
    rotation: counter-clockwise quarter turns (0..3).
    block_x, block_y: the launch's block shape (the grid covers the output).

Returns:
    (3, H', W') uint8, the slot the kernel writes (rotated).)doc");
  host.def("u8_to_f32", &host_u8_to_f32, py::arg("src"), py::arg("blocks"), py::arg("threads"),
           "Run vcd_u8_to_f32 on the CPU over `blocks` x `threads` (a grid-stride loop); returns float32 (N,).");
#endif
}
