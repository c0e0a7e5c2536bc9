// CPU preprocessing: batches of decoded frames (RGB, NV12 or YUV420p) -> resized planar
// RGB (N x 3 x out_height x out_width), uint8 or float32 in 0..255.
//
// Thread-safety: every function is reentrant; concurrent calls are safe as long as their
// output buffers do not overlap. Calls share the process's persistent worker pool (Note
// [One persistent pool] in thread_pool.h; options.num_threads caps the threads one call
// uses, 0 = the whole pool) and the output is bit-identical for every thread count (see
// Note [Deterministic resampling]).
//
// Note [Resampling]
// -----------------
// Resizing is separable: each output pixel is sum_i sum_j wy[i] * wx[j] * src(i, j), with
// per-axis tap tables built once per call.
//   * bilinear: half-pixel centres, src = (dst + 0.5) * in / out - 0.5 clamped to
//     [0, in - 1], no antialiasing (OpenCV INTER_LINEAR).
//   * area: exact box filter; destination pixel j covers source [j*s, (j+1)*s), s = in/out,
//     and each source pixel is weighted by the length it overlaps (OpenCV INTER_AREA,
//     Pillow BOX for integer factors). An axis that is upscaled uses bilinear instead.
//   * crop "squash" resizes the whole frame; "center" first takes the centred integer
//     source window with the output's aspect ratio: if the source is wider, width
//     floor(H * out_w / out_h + 0.5) at column (W - width) / 2 (integer division),
//     otherwise the same for the height.
//
// Note [YUV conversion]
// ---------------------
// YUV input is BT.601 limited range, as FFmpeg converts SD video without colour tags:
//   R = 1.164383 (Y-16) + 1.596027 (V-128)
//   G = 1.164383 (Y-16) - 0.391762 (U-128) - 0.812968 (V-128)
//   B = 1.164383 (Y-16) + 2.017232 (U-128)
// Chroma (planes of ceil(H/2) x ceil(W/2)) is upsampled by nearest neighbour (luma
// pixel (y, x) uses chroma (y/2, x/2)), as FFmpeg's unscaled yuv420p->rgb24 path does.
// Conversion is fused with resizing: Y, U and V are resampled with the same luma-space
// weights (chroma taps are the luma taps folded onto chroma indices, which is exactly
// nearest upsampling followed by resizing), then converted once per output pixel and
// clamped to [0, 255]. This equals convert-then-resize except where the source has
// out-of-gamut colours that convert-then-resize would clamp before averaging.
//
// Note [Deterministic resampling]
// -------------------------------
// Work is split into (frame, block of output rows) tasks. Every output pixel is computed
// by the same float operations in the same order whichever task or thread computes it,
// so results do not depend on the thread count or scheduling. That order is, per output
// pixel and channel, in float32:
//   out = sum over x taps j, ascending, of wx[j] * (sum over y taps i, ascending, of
//         wy[i] * src(i, j)),
// each sum starting from 0 (the vertical pass, then the horizontal one). The CUDA kernel
// performs exactly these operations (Note [Bit-exact parity with the CPU path] in
// cpp/cuda/preprocess_kernels.cu), and both are compiled without contracting a*b + c into
// an FMA (-ffp-contract=off here, --fmad=false there), so they agree bit for bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vcd {

enum class Interpolation { kBilinear, kArea };
enum class CropMode { kSquash, kCenter };
enum class OutputType { kUint8, kFloat32 };

// Parse the Python-facing option names; throw std::invalid_argument naming the allowed
// values otherwise.
Interpolation parse_interpolation(const std::string& name);  // "bilinear" | "area"
CropMode parse_crop_mode(const std::string& name);           // "squash" | "center"
OutputType parse_output_type(const std::string& name);       // "uint8" | "float32"

struct ResizeOptions {
  int64_t out_height = 224;
  int64_t out_width = 224;
  Interpolation interpolation = Interpolation::kArea;
  CropMode crop = CropMode::kSquash;
  OutputType out_type = OutputType::kUint8;
  int num_threads = 0;  // at most this many pool threads (caller included); 0 = the whole pool
};

struct FrameBatchShape {
  int64_t num_frames;
  int64_t height;
  int64_t width;
};

// Shape checks (throw std::invalid_argument with the offending shapes). The planes are
// C-contiguous uint8 arrays with these shapes:
//   RGB:     frames (N, H, W, 3)
//   NV12:    y (N, H, W), uv (N, ceil(H/2), 2*ceil(W/2)) interleaved U,V
//   YUV420p: y (N, H, W), u and v (N, ceil(H/2), ceil(W/2))
FrameBatchShape check_rgb_shape(const std::vector<int64_t>& frames_shape);
FrameBatchShape check_nv12_shapes(const std::vector<int64_t>& y_shape, const std::vector<int64_t>& uv_shape);
FrameBatchShape check_yuv420p_shapes(const std::vector<int64_t>& y_shape, const std::vector<int64_t>& u_shape,
                                     const std::vector<int64_t>& v_shape);
// Checks out size and thread count.
void check_resize_options(const ResizeOptions& options);

// Resize a batch into `out`, which must hold N * 3 * out_height * out_width elements of
// options.out_type (uint8_t or float), laid out NCHW. Validates shapes and options first.
void resize_rgb(const uint8_t* frames, const std::vector<int64_t>& frames_shape, const ResizeOptions& options,
                void* out);
void resize_nv12(const uint8_t* y, const std::vector<int64_t>& y_shape, const uint8_t* uv,
                 const std::vector<int64_t>& uv_shape, const ResizeOptions& options, void* out);
void resize_yuv420p(const uint8_t* y, const std::vector<int64_t>& y_shape, const uint8_t* u,
                    const std::vector<int64_t>& u_shape, const uint8_t* v, const std::vector<int64_t>& v_shape,
                    const ResizeOptions& options, void* out);

}  // namespace vcd
