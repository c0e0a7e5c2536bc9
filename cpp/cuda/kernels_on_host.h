// The CUDA preprocessing kernels (cpp/cuda/preprocess_kernels.cu) compiled as host C++
// through cpp/cuda/host_shim.h and launched on the CPU over the grid the GPU launcher
// uses. For tests only (tests/test_kernel_source.py): it lets every CI run check the .cu
// source bit for bit against the CPU resizer without a GPU. Production never calls it.
//
// Thread-safety: reentrant; concurrent calls are safe when their outputs do not overlap.
#pragma once

#include <cstdint>

namespace vcd::cuda_on_host {

// One axis' tap table as the kernel reads it (runtime/preprocess/cuda.py: AxisTaps).
struct TapTable {
  const int32_t* offsets;  // out_size + 1 entries
  const int32_t* index;
  const float* weight;
};

// vcd_nv12_to_rgb_planar_u8 on grid (ceil(out_width / block_x), ceil(out_height / block_y))
// of (block_x, block_y) threads; arguments as documented in the .cu file.
void nv12_to_rgb_planar_u8(const uint8_t* y_plane, int y_pitch, const uint8_t* uv_plane, int uv_pitch,
                           const TapTable& x, const TapTable& y, const TapTable& chroma_x, const TapTable& chroma_y,
                           int out_height, int out_width, int rotation, uint8_t* out, int block_x, int block_y);

// vcd_u8_to_f32 on `blocks` blocks of `threads` threads (a grid-stride loop).
void u8_to_f32(const uint8_t* src, float* dst, int64_t count, int blocks, int threads);

}  // namespace vcd::cuda_on_host
