#!/usr/bin/env bash
# Build the lean offline TensorRT 8.5.3.1 bundle for the GPU host (issue 16 item 1), here, with network (PyPI only).
#
#   bash benchmarks/gpu_host/build_trt_bundle.sh [OUT_DIR]     # default OUT_DIR: .gpu-bundle (git-ignored)
#
# OUT_DIR/trt/part-NNN + MANIFEST.json   the big archive (CPython 3.10, TensorRT libs, pycuda, PyNvVideoCodec,
#                                         PyAV, numpy, faiss-cpu, onnxruntime, pandas, pytest, hypothesis, tqdm)
# OUT_DIR/project/vcd_runtime-*.whl       the project's own cp310 wheel (kept out of the archive: it changes often)
# OUT_DIR/project/native/                 its native parts (vcd_core*.so, preprocess_kernels.fatbin): what is carried
#
# What is left out of TensorRT, and why (checked with readelf/strings on the 8.5.3.1 wheel):
#   * cuBLAS 11, cuBLASLt 11, cuDNN 8 (the pip deps nvidia-cublas/cudnn-cu11, ~1 GB): libnvinfer dlopens them only
#     for the CUBLAS/CUBLAS_LT/CUDNN tactic sources, which runtime/infer/trt.py turns off (Note [TensorRT 8.5
#     tactic sources]); libnvinfer_plugin.so.8 lists them as DT_NEEDED, so tiny stubs with the same sonames and
#     symbol versions stand in (built here: stubs/), every entry point returning an error status.
#   * nvidia-cuda-runtime-cu11: libnvinfer links cudart statically (no DT_NEEDED, no dlopen of libcudart).
#   * libnvrtc: dlopened only for loop / boolean-tensor layers, which the descriptor model has none of.
#   Kept: libnvinfer.so.8, libnvinfer_builder_resource.so.8.5.3 (needed to build engines), libnvonnxparser.so.8,
#   libnvinfer_plugin.so.8 and libnvparsers.so.8 (DT_NEEDED by the Python binding tensorrt.so).
# Env: PY310 (CPython 3.10), CUDA_ROOT (headers for pycuda, default /usr/local/cuda), PART_MIB (40),
#      VCD_BUNDLE_CACHE (downloads and builds, default ~/.cache/vcd-gpu-bundle), COMPRESSOR (xz|zstd).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/benchmarks/gpu_host"
OUT="$(mkdir -p "${1:-$ROOT/.gpu-bundle}" && cd "${1:-$ROOT/.gpu-bundle}" && pwd)"
CACHE="${VCD_BUNDLE_CACHE:-$HOME/.cache/vcd-gpu-bundle}"
PY310="${PY310:-$(pyenv root 2>/dev/null)/versions/3.10.13/bin/python3.10}"
CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
PART_MIB="${PART_MIB:-40}"
COMPRESSOR="${COMPRESSOR:-xz}"
NICE="nice -n 19"
[[ -x "$PY310" ]] || { echo "need CPython 3.10 at $PY310 (set PY310)" >&2; exit 2; }
PYHOME="$(cd "$(dirname "$PY310")/.." && pwd)"
W="$CACHE/wheels310"
mkdir -p "$W" "$OUT/project"
t0=$(date +%s)
log() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$W" "$@"
}
log "downloading cp310 wheels"
dl tensorrt==8.5.3.1 numpy==1.26.4 pynvvideocodec==2.2.4 av==17.1.0 faiss-cpu==1.9.0 packaging==24.2 \
   pytools==2024.1.21 platformdirs==4.3.6 typing_extensions==4.12.2 \
   onnxruntime==1.20.1 pandas==2.2.3 python-dateutil==2.9.0.post0 six==1.17.0 pytz==2024.2 tzdata==2024.2 tqdm==4.67.1 \
   pytest==8.3.4 pluggy==1.5.0 iniconfig==2.0.0 exceptiongroup==1.2.2 tomli==2.2.1 \
   hypothesis==6.122.3 attrs==24.3.0 sortedcontainers==2.4.0

# pycuda has no binary wheels: build one against the CUDA headers here, linked to a stub libcuda.so.1
# (the GPU host's driver library is the one loaded at run time).
if ! ls "$W"/pycuda-*-cp310-*.whl >/dev/null 2>&1; then
  log "building pycuda for cp310 against $CUDA_ROOT"
  bash "$HERE/build_pycuda.sh" "$PY310" "$W" "$CUDA_ROOT"
fi

if [[ "${VCD_REUSE_PROJECT_WHEEL:-0}" == 1 ]] && ls "$OUT"/project/vcd_runtime-*-cp310-*.whl >/dev/null 2>&1; then
  log "reusing $(ls "$OUT"/project/vcd_runtime-*-cp310-*.whl) (VCD_REUSE_PROJECT_WHEEL=1)"
else
  log "building the project's cp310 wheel"
  rm -f "$OUT"/project/vcd_runtime-*.whl
  (cd "$ROOT" && $NICE "$PY310" -m pip wheel -q --no-deps -w "$OUT/project" .)
fi
ls "$OUT"/project/vcd_runtime-*-cp310-*.whl >/dev/null
# what the host needs of it: the checkout brings runtime/ and model_assets/ (the wheel is mostly the 13 MB ONNX model)
rm -rf "$OUT/project/native" && mkdir -p "$OUT/project/native"
unzip -q -j "$OUT"/project/vcd_runtime-*-cp310-*.whl 'vcd_core*.so' '*/preprocess_kernels.fatbin' -d "$OUT/project/native" \
  || { echo "the wheel lacks vcd_core or the CUDA fatbin (nvcc missing?)" >&2; exit 2; }

STAGE="$CACHE/stage"
rm -rf "$STAGE" && mkdir -p "$STAGE/site" "$STAGE/stubs" "$STAGE/python/bin" "$STAGE/python/lib"
log "installing wheels into the stage"
$NICE "$PY310" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$STAGE/site" "$W"/*.whl
# never imported by the project: TensorRT's samples/graphsurgeon (not in the 8.5 wheel anyway), test suites, stubs
find "$STAGE/site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
rm -rf "$STAGE/site/bin"
# PyNvVideoCodec's wheel also unpacks its samples, benchmarks and FFmpeg's source tarball (12 MB, incompressible)
rm -rf "$STAGE/site/samples" "$STAGE/site/benchmarks" "$STAGE/site/external"
# faiss: keep only the generic build (its loader falls back to it when the AVX2/AVX512 ones are absent; the
# project's searches are small), -75 MB; pycuda was built with -g: drop its debug info, -16 MB
rm -f "$STAGE"/site/faiss/_swigfaiss_avx2*.so "$STAGE"/site/faiss/_swigfaiss_avx512*.so "$STAGE"/site/faiss/swigfaiss_avx2.py "$STAGE"/site/faiss/swigfaiss_avx512.py
strip --strip-debug "$STAGE"/site/pycuda/*.so

log "stub cuBLAS/cuBLASLt/cuDNN for libnvinfer_plugin.so.8"
plugin="$STAGE/site/tensorrt/libnvinfer_plugin.so.8"
for lib in libcublas.so.11 libcublasLt.so.11 libcudnn.so.8; do
  src="$CACHE/stub-${lib%%.so*}.c"; : > "$src"
  for s in $(nm -D --undefined-only "$plugin" | grep "@$lib\$" | sed -E 's/.* U ([^@]+)@.*/\1/' | sort -u); do
    echo "int $s(void){return 1;}" >> "$src"
  done
  [[ -s "$src" ]] || { echo "no symbols of $lib in $plugin (not TensorRT 8.5?)" >&2; exit 2; }
  echo "$lib { global: *; };" > "$CACHE/stub.map"
  gcc -shared -fPIC -O1 -s -o "$STAGE/stubs/$lib" "$src" -Wl,--version-script="$CACHE/stub.map" -Wl,-soname,$lib
done

log "CPython 3.10 ($PYHOME), pruned"
cp -a "$PYHOME/bin/python3.10" "$STAGE/python/bin/" && ln -s python3.10 "$STAGE/python/bin/python3"
cp -a "$PYHOME"/lib/libpython3.10.so* "$STAGE/python/lib/"
tar -C "$PYHOME/lib" --exclude='__pycache__' --exclude='python3.10/test' --exclude='python3.10/idlelib' \
    --exclude='python3.10/tkinter' --exclude='python3.10/turtledemo' --exclude='python3.10/ensurepip' \
    --exclude='python3.10/lib2to3' --exclude='python3.10/config-3.10-x86_64-linux-gnu' --exclude='python3.10/site-packages' \
    --exclude='python3.10/pydoc_data' --exclude='python3.10/unittest/test' --exclude='python3.10/ctypes/test' \
    --exclude='python3.10/distutils/tests' --exclude='python3.10/sqlite3/test' --exclude='_test*.so' --exclude='_tkinter*.so' \
    --exclude='_ctypes_test*.so' --exclude='xxlimited*.so' -cf - python3.10 | tar -C "$STAGE/python/lib" -xf -
mkdir -p "$STAGE/python/lib/python3.10/site-packages"
# libpython is found through LD_LIBRARY_PATH (env.sh): the binary's RUNPATH names this machine's pyenv folder
cp "$HERE/env.sh" "$STAGE/env.sh"
"$PY310" - "$STAGE" "$W" <<'PY' > "$STAGE/BUNDLE.txt"
import sys, pathlib
stage, wheels = map(pathlib.Path, sys.argv[1:])
print("vcd-runtime offline TensorRT bundle: CPython", sys.version.split()[0])
for w in sorted(wheels.glob("*.whl")):
    print(" ", w.name)
PY

log "self-check here (CPU only: imports that need no GPU)"
mkdir -p "$CACHE/stub-libcuda" && echo "" | gcc -shared -x c - -o "$CACHE/stub-libcuda/libcuda.so.1" -Wl,-soname,libcuda.so.1
(source "$STAGE/env.sh" && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$CACHE/stub-libcuda" python3.10 -c "
import importlib.util
import numpy, av, faiss, onnxruntime, pandas, tqdm, pytest, hypothesis, tensorrt, pycuda  # pycuda.driver needs the real libcuda
# PyNvVideoCodec loads the driver's libnvidia-encode.so.1 when imported: only findable here
assert importlib.util.find_spec('PyNvVideoCodec') is not None
print('stage imports ok: numpy', numpy.__version__, '| av', av.__version__, '| faiss', faiss.__version__, '| tensorrt', tensorrt.__version__, '| pycuda | PyNvVideoCodec found')")

log "packing ($COMPRESSOR, parts of $PART_MIB MiB)"
python3 "$HERE/bundle.py" pack "$STAGE" "$OUT/trt" --part-mib "$PART_MIB" --compressor "$COMPRESSOR" --name vcd-trt-8.5.3.1-cp310
du -sb "$STAGE" | awk '{printf "stage (uncompressed): %.1f MiB\n", $1/1048576}'
du -sh "$OUT"/trt "$OUT"/project/*.whl
log "done"
