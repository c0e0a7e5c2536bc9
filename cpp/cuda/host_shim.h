// Just enough of CUDA to compile cpp/cuda/preprocess_kernels.cu as host C++ and run its
// kernels on the CPU, so every CI run (no GPU, no nvcc) checks the kernel source itself
// against the CPU resizer (tests/test_kernel_source.py).
//
// What it provides: the qualifiers (__global__, __device__, __forceinline__; __restrict__
// is a GCC/Clang extension already), __ldg, the built-in index variables threadIdx,
// blockIdx, blockDim and gridDim, and launch_on_host(), which runs a grid block by block
// and, within a block, thread by thread. That serial order is a faithful execution only
// for kernels whose threads do not communicate: the shim deliberately has no __shared__,
// __syncthreads or warp intrinsics, so a kernel that starts using them fails to compile
// here rather than silently running wrong.
//
// Thread-safety: the index variables are thread_local, so different host threads may run
// launches concurrently.
#pragma once

#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#error "host_shim.h is for host compilers only; nvcc provides the real built-ins"
#endif

#define __global__
#define __device__
#define __forceinline__ inline

// The read-only data cache load is a plain load on the host.
template <typename T>
inline T __ldg(const T* pointer) {
  return *pointer;
}

// Same member types as CUDA's (unsigned int), so index arithmetic converts identically.
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned int x_, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// kernel<<<grid, block>>>(args...) on the calling thread.
template <typename... Params, typename... Args>
void launch_on_host(dim3 grid, dim3 block, void (*kernel)(Params...), Args&&... args) {
  gridDim = grid;
  blockDim = block;
  for (unsigned int bz = 0; bz < grid.z; ++bz) {
    for (unsigned int by = 0; by < grid.y; ++by) {
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        blockIdx = {bx, by, bz};
        for (unsigned int tz = 0; tz < block.z; ++tz) {
          for (unsigned int ty = 0; ty < block.y; ++ty) {
            for (unsigned int tx = 0; tx < block.x; ++tx) {
              threadIdx = {tx, ty, tz};
              kernel(args...);
            }
          }
        }
      }
    }
  }
}
