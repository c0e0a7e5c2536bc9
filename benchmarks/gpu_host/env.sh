# Environment of the offline TensorRT bundle (copied into it as env.sh): source it from anywhere.
#   source /opt/vcd-trt/env.sh && python3.10 -c "import tensorrt"
VCD_TRT_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export VCD_TRT_HOME
export PATH="$VCD_TRT_HOME/python/bin${PATH:+:$PATH}"
export PYTHONHOME="$VCD_TRT_HOME/python"
export PYTHONPATH="$VCD_TRT_HOME/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONNOUSERSITE=1
# libpython, then the cuBLAS/cuDNN stand-ins (Note [TensorRT 8.5 tactic sources] in the TRT backend), then the driver
_vcd_ld="$VCD_TRT_HOME/python/lib:$VCD_TRT_HOME/stubs"
[[ -d /usr/local/nvidia/lib64 ]] && _vcd_ld="$_vcd_ld:/usr/local/nvidia/lib64"
export LD_LIBRARY_PATH="$_vcd_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset _vcd_ld
# the project's CUDA kernels (remote.sh install puts them in native/, or a whole wheel's copy in site/)
_vcd_fb="$(ls "$VCD_TRT_HOME"/native/preprocess_kernels.fatbin "$VCD_TRT_HOME"/site/runtime/*/preprocess_kernels.fatbin 2>/dev/null | head -1)"
[[ -n "$_vcd_fb" ]] && export VCD_CUDA_FATBIN="$_vcd_fb"
unset _vcd_fb
