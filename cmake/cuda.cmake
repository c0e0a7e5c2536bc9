# Optional CUDA preprocessing kernels (cpp/cuda/preprocess_kernels.cu).
#
# The kernels are compiled to a fatbin and installed next to the Python code as
# runtime/preprocess/preprocess_kernels.fatbin; runtime/preprocess/cuda.py loads it with pycuda
# at run time (Note [Why a fatbin loaded by pycuda] there). Nothing links against CUDA, so
# the pybind11 extension stays CPU-only and the package builds the same without any CUDA
# toolchain (then there is simply no fatbin).
#
#   -DVCD_ENABLE_CUDA=OFF                 skip the kernels even when nvcc is found
#   -DVCD_CUDA_ARCHITECTURES="70;80;90"   override the SASS targets (PTX for the highest is added)
#
# Note [Which compiler builds the fatbin]
# ---------------------------------------
# The challenge's GPU is a V100 (sm_70); we also want sm_75..sm_90 SASS and PTX for newer
# GPUs, all in one fatbin (tests/test_fatbin.py checks which images it holds).
#   * nvcc 12.x or older: nvcc builds every architecture (-gencode per arch, --fmad=false).
#   * nvcc 13+ dropped Volta (sm_70 "Unsupported gpu architecture"), so the kernels are
#     compiled with NVRTC 12 instead, for every architecture (one compiler for the whole
#     fatbin, rather than sm_70 from CUDA 12 and the rest from CUDA 13), by
#     cmake/nvrtc_fatbin.py: a cubin per sm_XX and PTX for the highest, packed by the
#     system toolkit's `fatbinary`, which still accepts sm_70 images. NVRTC 12 comes from
#     PyPI's nvidia-cuda-nvrtc-cu12, a build requirement in pyproject.toml (PyPI's
#     nvidia-cuda-nvcc-cu12 wheels hold only ptxas and libnvvm, no nvcc driver or front
#     end, so they cannot compile .cu files; NVRTC can). VCD_NVRTC_LIBRARY=/path/libnvrtc.so.12
#     picks another NVRTC. Without a usable NVRTC 12 the fatbin is built by nvcc 13 without
#     sm_70 and a warning says so.
# NVRTC and nvcc agree on the options that matter here (--fmad=false, -std=c++17, -O3 being
# NVRTC's default), so both paths produce the same arithmetic (Note [Bit-exact parity with
# the CPU path] in the .cu file).
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
  # Volta (the challenge's V100) .. Hopper; sm_80 SASS also runs on sm_86/sm_89, but their
  # own SASS is cheap.
  set(VCD_CUDA_ARCHITECTURES 70 75 80 86 89 90)
endif()
list(SORT VCD_CUDA_ARCHITECTURES COMPARE NATURAL)
list(GET VCD_CUDA_ARCHITECTURES -1 _vcd_ptx_arch)
list(GET VCD_CUDA_ARCHITECTURES 0 _vcd_lowest_arch)

set(VCD_CUDA_SOURCE "${CMAKE_CURRENT_SOURCE_DIR}/cpp/cuda/preprocess_kernels.cu")
set(VCD_CUDA_FATBIN "${CMAKE_CURRENT_BINARY_DIR}/preprocess_kernels.fatbin")
# --fmad=false: bit-exact parity with the CPU resizer (Note [Bit-exact parity with the CPU
# path] in the .cu file).
set(_vcd_kernel_options --fmad=false -std=c++17)

set(_vcd_compiler nvcc)
if(VCD_NVCC_VERSION VERSION_GREATER_EQUAL 13.0 AND _vcd_lowest_arch LESS 75)
  # Note [Which compiler builds the fatbin]: NVRTC 12 + the toolkit's fatbinary.
  execute_process(COMMAND "${VCD_NVCC}" -dryrun --version ERROR_VARIABLE _vcd_nvcc_dryrun OUTPUT_QUIET)
  string(REGEX MATCH "_HERE_=([^\n]*)" _vcd_here "${_vcd_nvcc_dryrun}")
  get_filename_component(_vcd_nvcc_dir "${VCD_NVCC}" DIRECTORY)
  find_program(VCD_FATBINARY fatbinary
    HINTS "${CMAKE_MATCH_1}" "${_vcd_nvcc_dir}" ENV CUDA_HOME ENV CUDA_PATH
    PATH_SUFFIXES bin
    PATHS /usr/local/cuda/bin)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/nvrtc_fatbin.py" find
    OUTPUT_VARIABLE _vcd_nvrtc ERROR_VARIABLE _vcd_nvrtc_error RESULT_VARIABLE _vcd_nvrtc_rc)
  set(_vcd_missing_arch)
  if(_vcd_nvrtc_rc EQUAL 0)
    list(GET _vcd_nvrtc 0 VCD_NVRTC_LIBRARY)
    list(GET _vcd_nvrtc 1 VCD_NVRTC_VERSION)
    list(GET _vcd_nvrtc 2 _vcd_nvrtc_archs)
    string(REPLACE "," ";" _vcd_nvrtc_archs "${_vcd_nvrtc_archs}")
    foreach(arch IN LISTS VCD_CUDA_ARCHITECTURES)
      if(NOT arch IN_LIST _vcd_nvrtc_archs)
        list(APPEND _vcd_missing_arch ${arch})
      endif()
    endforeach()
  endif()
  if(_vcd_nvrtc_rc EQUAL 0 AND VCD_FATBINARY AND NOT _vcd_missing_arch)
    set(_vcd_compiler nvrtc)
  else()
    if(NOT _vcd_nvrtc_rc EQUAL 0)
      string(STRIP "${_vcd_nvrtc_error}" _vcd_why)
    elseif(NOT VCD_FATBINARY)
      set(_vcd_why "no fatbinary next to ${VCD_NVCC}")
    else()
      set(_vcd_why "NVRTC ${VCD_NVRTC_VERSION} cannot target sm ${_vcd_missing_arch}")
    endif()
    message(WARNING "vcd: nvcc ${VCD_NVCC_VERSION} cannot target sm_${_vcd_lowest_arch} and NVRTC 12 is not usable "
                    "(${_vcd_why}); the fatbin will lack the architectures below sm_75 (the V100). "
                    "Install nvidia-cuda-nvrtc-cu12 into the build environment (it is a build requirement).")
    set(_vcd_kept)
    foreach(arch IN LISTS VCD_CUDA_ARCHITECTURES)
      if(arch GREATER_EQUAL 75)
        list(APPEND _vcd_kept ${arch})
      endif()
    endforeach()
    set(VCD_CUDA_ARCHITECTURES ${_vcd_kept})
    if(NOT VCD_CUDA_ARCHITECTURES)
      message(WARNING "vcd: no CUDA architecture left to build; building without the CUDA preprocessing kernels")
      return()
    endif()
  endif()
endif()

if(_vcd_compiler STREQUAL "nvrtc")
  set(_vcd_option_args)
  foreach(option IN LISTS _vcd_kernel_options)
    list(APPEND _vcd_option_args "--option=${option}")
  endforeach()
  add_custom_command(
    OUTPUT "${VCD_CUDA_FATBIN}"
    COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/nvrtc_fatbin.py" build
            --nvrtc "${VCD_NVRTC_LIBRARY}" --fatbinary "${VCD_FATBINARY}" --source "${VCD_CUDA_SOURCE}"
            --sm ${VCD_CUDA_ARCHITECTURES} --ptx ${_vcd_ptx_arch} --output "${VCD_CUDA_FATBIN}" ${_vcd_option_args}
    DEPENDS "${VCD_CUDA_SOURCE}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/nvrtc_fatbin.py"
    COMMENT "NVRTC ${VCD_NVRTC_VERSION}: preprocess_kernels.cu -> fatbin (sm ${VCD_CUDA_ARCHITECTURES}, PTX compute_${_vcd_ptx_arch})"
    VERBATIM)
  set(_vcd_toolchain "NVRTC ${VCD_NVRTC_VERSION} (${VCD_NVRTC_LIBRARY}) + ${VCD_FATBINARY}")
else()
  list(GET VCD_CUDA_ARCHITECTURES -1 _vcd_ptx_arch)
  set(_vcd_gencode)
  foreach(arch IN LISTS VCD_CUDA_ARCHITECTURES)
    list(APPEND _vcd_gencode -gencode "arch=compute_${arch},code=sm_${arch}")
  endforeach()
  # PTX of the newest architecture: the driver JIT-compiles it for GPUs newer than the list.
  list(APPEND _vcd_gencode -gencode "arch=compute_${_vcd_ptx_arch},code=compute_${_vcd_ptx_arch}")
  # Uncompressed images: nvcc 13 compresses PTX with zstd by default, which older drivers
  # may not read.
  set(_vcd_fatbin_options)
  if(VCD_NVCC_VERSION VERSION_GREATER_EQUAL 13.0)
    set(_vcd_fatbin_options -Xfatbin=--compress=false)
  endif()
  add_custom_command(
    OUTPUT "${VCD_CUDA_FATBIN}"
    COMMAND "${VCD_NVCC}" --fatbin -O3 ${_vcd_kernel_options} ${_vcd_fatbin_options} ${_vcd_gencode} -o "${VCD_CUDA_FATBIN}" "${VCD_CUDA_SOURCE}"
    DEPENDS "${VCD_CUDA_SOURCE}"
    COMMENT "nvcc: preprocess_kernels.cu -> fatbin (sm ${VCD_CUDA_ARCHITECTURES}, PTX compute_${_vcd_ptx_arch})"
    VERBATIM)
  set(_vcd_toolchain "${VCD_NVCC} ${VCD_NVCC_VERSION}")
endif()
add_custom_target(vcd_cuda_kernels ALL DEPENDS "${VCD_CUDA_FATBIN}")

install(FILES "${VCD_CUDA_FATBIN}" DESTINATION runtime/preprocess)
message(STATUS "vcd: CUDA kernels with ${_vcd_toolchain} for sm ${VCD_CUDA_ARCHITECTURES} + PTX compute_${_vcd_ptx_arch}")
