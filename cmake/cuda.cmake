# Optional CUDA preprocessing kernels (cpp/cuda/preprocess_kernels.cu).
#
# The kernels are compiled to a fatbin with nvcc and installed next to the Python code as
# runtime/preprocess/preprocess_kernels.fatbin; runtime/preprocess/cuda.py loads it with pycuda
# at run time (Note [Why a fatbin loaded by pycuda] there). Nothing links against CUDA, so
# the pybind11 extension stays CPU-only and the package builds the same without nvcc.
#
#   -DVCD_ENABLE_CUDA=OFF             skip the kernels even when nvcc is found
#   -DVCD_CUDA_ARCHITECTURES="80;90"  override the SASS targets (PTX for the highest is added)
include_guard(GLOBAL)

option(VCD_ENABLE_CUDA "Build the CUDA preprocessing kernels (fatbin) when nvcc is available" ON)

if(NOT VCD_ENABLE_CUDA)
  message(STATUS "vcd: CUDA kernels disabled (VCD_ENABLE_CUDA=OFF)")
  return()
endif()

# Prefer the compiler CMake's CUDA language support finds; fall back to a plain nvcc on PATH
# or under CUDA_HOME / CUDA_PATH (check_language needs a complete toolkit, nvcc alone does not).
include(CheckLanguage)
check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  set(VCD_NVCC "${CMAKE_CUDA_COMPILER}")
else()
  find_program(VCD_NVCC nvcc
    HINTS ENV CUDA_HOME ENV CUDA_PATH
    PATH_SUFFIXES bin
    PATHS /usr/local/cuda/bin)
endif()

if(NOT VCD_NVCC)
  message(STATUS "vcd: nvcc not found; building without the CUDA preprocessing kernels")
  return()
endif()

execute_process(COMMAND "${VCD_NVCC}" --version OUTPUT_VARIABLE _vcd_nvcc_version_text RESULT_VARIABLE _vcd_nvcc_rc)
if(NOT _vcd_nvcc_rc EQUAL 0)
  message(WARNING "vcd: ${VCD_NVCC} --version failed; building without the CUDA preprocessing kernels")
  return()
endif()
string(REGEX MATCH "release ([0-9]+)\\.([0-9]+)" _vcd_nvcc_release "${_vcd_nvcc_version_text}")
set(VCD_NVCC_VERSION "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")

if(NOT VCD_CUDA_ARCHITECTURES)
  # Volta .. Hopper. CUDA 13 dropped sm_70 (Volta): only list it for older toolkits.
  set(VCD_CUDA_ARCHITECTURES 75 80 86 89 90)
  if(VCD_NVCC_VERSION VERSION_LESS 13.0)
    list(PREPEND VCD_CUDA_ARCHITECTURES 70)
  endif()
endif()
list(SORT VCD_CUDA_ARCHITECTURES COMPARE NATURAL)
list(GET VCD_CUDA_ARCHITECTURES -1 _vcd_ptx_arch)

set(_vcd_gencode)
foreach(arch IN LISTS VCD_CUDA_ARCHITECTURES)
  list(APPEND _vcd_gencode -gencode "arch=compute_${arch},code=sm_${arch}")
endforeach()
# PTX of the newest architecture: the driver JIT-compiles it for GPUs newer than the list.
list(APPEND _vcd_gencode -gencode "arch=compute_${_vcd_ptx_arch},code=compute_${_vcd_ptx_arch}")

set(VCD_CUDA_SOURCE "${CMAKE_CURRENT_SOURCE_DIR}/cpp/cuda/preprocess_kernels.cu")
set(VCD_CUDA_FATBIN "${CMAKE_CURRENT_BINARY_DIR}/preprocess_kernels.fatbin")

# --fmad=false: bit-exact parity with the CPU resizer (Note [Bit-exact parity with the CPU
# path] in the .cu file).
add_custom_command(
  OUTPUT "${VCD_CUDA_FATBIN}"
  COMMAND "${VCD_NVCC}" --fatbin -O3 --fmad=false -std=c++17 ${_vcd_gencode} -o "${VCD_CUDA_FATBIN}" "${VCD_CUDA_SOURCE}"
  DEPENDS "${VCD_CUDA_SOURCE}"
  COMMENT "nvcc: preprocess_kernels.cu -> fatbin (sm ${VCD_CUDA_ARCHITECTURES}, PTX compute_${_vcd_ptx_arch})"
  VERBATIM)
add_custom_target(vcd_cuda_kernels ALL DEPENDS "${VCD_CUDA_FATBIN}")

install(FILES "${VCD_CUDA_FATBIN}" DESTINATION runtime/preprocess)
message(STATUS "vcd: CUDA kernels with ${VCD_NVCC} ${VCD_NVCC_VERSION} for sm ${VCD_CUDA_ARCHITECTURES} + PTX compute_${_vcd_ptx_arch}")
