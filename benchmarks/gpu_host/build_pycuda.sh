#!/usr/bin/env bash
# Build a pycuda wheel for one interpreter against CUDA headers, with no GPU or driver here:
# the extension links a stub libcuda.so.1 (empty, same soname); the GPU host's driver library is loaded at run time.
#   bash build_pycuda.sh PYTHON WHEEL_DIR [CUDA_ROOT]
set -euo pipefail
PY="$1"; DEST="$(mkdir -p "$2" && cd "$2" && pwd)"; CUDA_ROOT="${3:-/usr/local/cuda}"
VERSION="${PYCUDA_VERSION:-2026.1}"
[[ -f "$CUDA_ROOT/include/cuda.h" ]] || { echo "need CUDA headers at $CUDA_ROOT/include (set CUDA_ROOT)" >&2; exit 2; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$work/stub" && cd "$work"
echo "" | gcc -shared -x c - -o stub/libcuda.so -Wl,-soname,libcuda.so.1
"$PY" -m pip download -q --no-deps --no-binary=pycuda "pycuda==$VERSION" -d .
tar xzf "pycuda-$VERSION.tar.gz" && cd "pycuda-$VERSION"
"$PY" configure.py --cuda-root="$CUDA_ROOT" --cudadrv-lib-dir="$work/stub" --no-cuda-enable-curand >/dev/null
# --no-as-needed: the stub has no symbols, so the linker would otherwise drop libcuda.so.1 from the extension's needs
LDFLAGS="-Wl,--no-as-needed" LIBRARY_PATH="$work/stub" MAKEFLAGS="-j2" nice -n 19 "$PY" -m pip wheel -q --no-deps -w "$DEST" .
ls "$DEST"/pycuda-"$VERSION"-*.whl
