// The only file that knows about Python: binds the vcd C++ core as the `vcd_core` module.
//
// Conventions (see STYLE-ANCHORS): numpy arrays in and out; inputs are used in place when
// they are C-contiguous with the right dtype (otherwise copied once); outputs are numpy
// arrays allocated here and written in place by the core with the GIL released.
// std::invalid_argument from the core becomes ValueError (pybind11's built-in
// translation), keeping the core's message with the offending values.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "preprocess.h"
#include "sampler.h"

namespace py = pybind11;

namespace {

#ifndef VCD_CORE_VERSION
#define VCD_CORE_VERSION "0.1.0"
#endif

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
    py::gil_scoped_release release;
    selection = vcd::sample_uniform(pts_array.data(), pts_array.shape(0), fps, duration);
  }
  return selection_to_numpy(selection);
}

py::tuple sample_at_times(const DoubleArray& pts_array, const DoubleArray& times_array, double duration) {
  check_1d(pts_array, "pts");
  check_1d(times_array, "times");
  vcd::SampleSelection selection;
  {
    py::gil_scoped_release release;
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
    py::gil_scoped_release release;
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
    py::gil_scoped_release release;
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
    py::gil_scoped_release release;
    vcd::resize_yuv420p(y_u8.data(), y_shape, u_u8.data(), u_shape, v_u8.data(), v_shape, options, out_data);
  }
  return out;
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
    num_threads: worker threads, 0 = all cores; the result does not depend on it.

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
}
