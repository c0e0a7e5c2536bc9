// CUDA preprocessing kernels: NV12 frames (as NVDEC outputs them) -> resized planar RGB
// uint8, written straight into one slot of a device batch buffer (N x 3 x H x W), so that
// frames from several videos fill one inference batch without a host round trip.
//
// Loaded at run time from a fatbin by runtime/preprocess/cuda.py with pycuda
// (module_from_buffer), in the same CUDA context as the NVDEC decoder and TensorRT; see
// Note [Why a fatbin loaded by pycuda] there. Only extern "C" __global__ functions live
// here (no host code), so the names are stable for cuModuleGetFunction. The fatbin is
// built by cmake/cuda.cmake (Note [Which compiler builds the fatbin] there).
//
// The same source is also compiled as host C++ through cpp/cuda/host_shim.h and checked
// against the CPU resizer on every CI run (tests/test_kernel_source.py), so it may only use
// what the shim provides: threadIdx/blockIdx/blockDim/gridDim, __global__, __device__,
// __forceinline__, __restrict__, __ldg, fminf/fmaxf. No shared memory, __syncthreads or
// warp intrinsics: the shim runs the threads of a block one after another.
//
// Thread-safety: kernels are pure functions of their arguments; launches on different
// streams may run concurrently as long as their output slots do not overlap.
//
// Note [Bit-exact parity with the CPU path]
// -----------------------------------------
// The arithmetic mirrors cpp/preprocess.cpp (Notes [Resampling], [YUV conversion] and
// [Deterministic resampling] in cpp/preprocess.h):
//   * the per-axis tap tables (source index + float32 weight per output index) are built
//     on the host by the same formulas as the C++ code and uploaded once per geometry;
//     chroma taps are the luma taps folded onto chroma indices (nearest upsampling);
//   * each output pixel is the sum over x taps (in order) of w_x * (the sum over y taps
//     (in order) of w_y * src), every sum accumulated in float32 starting from 0, exactly
//     like the CPU's vertical-then-horizontal passes (the other order differs in the last
//     bit often enough to flip a uint8 now and then: about 1 pixel per 640x360 frame);
//   * BT.601 limited range with the same float constants, clamp to [0, 255], then
//     uint8(v + 0.5).
// The fatbin is compiled with --fmad=false so no multiply-add is contracted into an FMA
// (the CPU build uses -ffp-contract=off); the result is then bit-identical to
// vcd_core.resize_nv12 for the same frame.

#if defined(__CUDACC_RTC__)
// NVRTC has no C library headers; these are the fixed-width types the kernels use.
typedef unsigned char uint8_t;
typedef int int32_t;
typedef long long int64_t;
#else
#include <stdint.h>
#endif

namespace {

struct Taps {
  const int32_t* offsets;  // out_size + 1 entries
  const int32_t* index;    // source indices
  const float* weight;
};

// Resample one channel of a pitched plane at output pixel (out_x, out_y) (Note [Bit-exact
// parity with the CPU path]: columns first, then the row).
__device__ __forceinline__ float resample(const uint8_t* plane, int pitch, const Taps& x, const Taps& y, int out_x,
                                          int out_y, int channels, int channel) {
  const int x_begin = __ldg(x.offsets + out_x);
  const int x_end = __ldg(x.offsets + out_x + 1);
  const int y_begin = __ldg(y.offsets + out_y);
  const int y_end = __ldg(y.offsets + out_y + 1);
  float acc = 0.0f;
  for (int tx = x_begin; tx < x_end; ++tx) {
    const uint8_t* column = plane + __ldg(x.index + tx) * channels + channel;
    float vertical = 0.0f;
    for (int ty = y_begin; ty < y_end; ++ty) {
      vertical += __ldg(y.weight + ty) * static_cast<float>(column[static_cast<int64_t>(__ldg(y.index + ty)) * pitch]);
    }
    acc += __ldg(x.weight + tx) * vertical;
  }
  return acc;
}

__device__ __forceinline__ uint8_t to_u8(float value) {
  return static_cast<uint8_t>(fminf(fmaxf(value, 0.0f), 255.0f) + 0.5f);
}

}  // namespace

// One thread per output pixel of the unrotated (out_height x out_width) image.
//
// Args:
//   y_plane, y_pitch: luma plane and its row pitch in bytes.
//   uv_plane, uv_pitch: interleaved U,V plane (ceil(H/2) rows) and its pitch.
//   {x,y,cx,cy}_{offsets,index,weight}: luma x/y and chroma x/y tap tables.
//   out_height, out_width: size before rotation.
//   rotation: counter-clockwise quarter turns (0..3), as numpy.rot90(image, rotation).
//   out: the slot (3 planes of the rotated size), uint8 NCHW.
extern "C" __global__ void vcd_nv12_to_rgb_planar_u8(
    const uint8_t* __restrict__ y_plane, int y_pitch, const uint8_t* __restrict__ uv_plane, int uv_pitch,
    const int32_t* x_offsets, const int32_t* x_index, const float* x_weight,
    const int32_t* y_offsets, const int32_t* y_index, const float* y_weight,
    const int32_t* cx_offsets, const int32_t* cx_index, const float* cx_weight,
    const int32_t* cy_offsets, const int32_t* cy_index, const float* cy_weight,
    int out_height, int out_width, int rotation, uint8_t* __restrict__ out) {
  const int ox = blockIdx.x * blockDim.x + threadIdx.x;
  const int oy = blockIdx.y * blockDim.y + threadIdx.y;
  if (ox >= out_width || oy >= out_height) return;

  const Taps x{x_offsets, x_index, x_weight};
  const Taps y{y_offsets, y_index, y_weight};
  const Taps cx{cx_offsets, cx_index, cx_weight};
  const Taps cy{cy_offsets, cy_index, cy_weight};

  const float luma = resample(y_plane, y_pitch, x, y, ox, oy, 1, 0);
  const float u = resample(uv_plane, uv_pitch, cx, cy, ox, oy, 2, 0);
  const float v = resample(uv_plane, uv_pitch, cx, cy, ox, oy, 2, 1);

  const float luma_term = 1.164383f * (luma - 16.0f);
  const float cb = u - 128.0f;
  const float cr = v - 128.0f;
  const float r = luma_term + 1.596027f * cr;
  const float g = luma_term - 0.391762f * cb - 0.812968f * cr;
  const float b = luma_term + 2.017232f * cb;

  // Destination (row, col) and size after rotation (numpy.rot90 semantics).
  int row = oy, col = ox, width = out_width, height = out_height;
  switch (rotation & 3) {
    case 1: row = out_width - 1 - ox; col = oy; width = out_height; height = out_width; break;
    case 2: row = out_height - 1 - oy; col = out_width - 1 - ox; break;
    case 3: row = ox; col = out_height - 1 - oy; width = out_height; height = out_width; break;
    default: break;
  }
  const int64_t plane = static_cast<int64_t>(height) * width;
  const int64_t at = static_cast<int64_t>(row) * width + col;
  out[at] = to_u8(r);
  out[plane + at] = to_u8(g);
  out[2 * plane + at] = to_u8(b);
}

// uint8 -> float32 (0..255, no scaling) for engines built with a float input tensor.
extern "C" __global__ void vcd_u8_to_f32(const uint8_t* __restrict__ src, float* __restrict__ dst, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    dst[i] = static_cast<float>(src[i]);
  }
}
