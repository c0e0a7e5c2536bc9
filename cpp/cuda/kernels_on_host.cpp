#include "kernels_on_host.h"

// clang-format off: the shim must come first; it defines what the .cu file expects.
#include "host_shim.h"
#include "preprocess_kernels.cu"
// clang-format on

#include <stdexcept>

namespace vcd::cuda_on_host {
namespace {

unsigned int blocks_for(int size, int block) { return static_cast<unsigned int>((size + block - 1) / block); }

}  // namespace

void nv12_to_rgb_planar_u8(const uint8_t* y_plane, int y_pitch, const uint8_t* uv_plane, int uv_pitch,
                           const TapTable& x, const TapTable& y, const TapTable& chroma_x, const TapTable& chroma_y,
                           int out_height, int out_width, int rotation, uint8_t* out, int block_x, int block_y) {
  if (block_x < 1 || block_y < 1 || out_height < 1 || out_width < 1) {
    throw std::invalid_argument("block and output sizes must be >= 1");
  }
  const dim3 grid(blocks_for(out_width, block_x), blocks_for(out_height, block_y));
  const dim3 block(static_cast<unsigned int>(block_x), static_cast<unsigned int>(block_y));
  launch_on_host(grid, block, &vcd_nv12_to_rgb_planar_u8, y_plane, y_pitch, uv_plane, uv_pitch, x.offsets, x.index,
                 x.weight, y.offsets, y.index, y.weight, chroma_x.offsets, chroma_x.index, chroma_x.weight,
                 chroma_y.offsets, chroma_y.index, chroma_y.weight, out_height, out_width, rotation, out);
}

void u8_to_f32(const uint8_t* src, float* dst, int64_t count, int blocks, int threads) {
  if (blocks < 1 || threads < 1) throw std::invalid_argument("blocks and threads must be >= 1");
  launch_on_host(dim3(static_cast<unsigned int>(blocks)), dim3(static_cast<unsigned int>(threads)), &vcd_u8_to_f32,
                 src, dst, count);
}

}  // namespace vcd::cuda_on_host
