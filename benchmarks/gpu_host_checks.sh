#!/usr/bin/env bash
# GPU-host acceptance checks for the NVDEC -> CUDA preprocessing -> TensorRT FP16 path (issue 4 "done when"):
#   * TensorRT FP16 vs ONNX Runtime FP32 cosine >= 0.999
#   * end-to-end gpu >= 0.8 x decode-only NVDEC (frames/s) and >= 10 x naive (videos/s)
#   * worst per-video latency << 10 s
#
# Steps marked HERE run on the development machine (repo root); DEVICE steps run on the GPU
# host through the device tool (`run`), from the repo root, one command per call (each < 10 min).
#
#   HERE:   bash benchmarks/gpu_host_checks.sh prepare            # bundle parts + cp310 native parts (vcd_core, fatbin) + wheels
#   HERE:   bash benchmarks/gpu_host_checks.sh place K             # put bundle part K in .gpu-bundle/  (K = 0 .. COUNT-1)
#   DEVICE: bash .gpu-bundle/remote.sh stage K                      # carry [".gpu-bundle"], once per part, in order
#   DEVICE: bash .gpu-bundle/remote.sh install                      # carry [".gpu-bundle"] (after the last part)
#   DEVICE: bash benchmarks/gpu_host_checks.sh remote-wheels       # carry [".gpu-wheels"]  (av, vcd_core, fatbin)
#   DEVICE: bash benchmarks/gpu_host_checks.sh remote-wheels       # carry [".gpu-wheels2"] (pytest, hypothesis, pandas, tqdm)
#   DEVICE: bash benchmarks/gpu_host_checks.sh remote-tests        # GPU pytest (FAIL_WITHOUT_CUDA=1); builds+caches the engine (~2 min)
#   DEVICE: bash benchmarks/gpu_host_checks.sh remote-videos       # synthetic benchmark videos (no network on the host)
#   DEVICE: bash benchmarks/gpu_host_checks.sh remote-bench        # runtime.bench all modes + NVDEC session sweep -> $OUT
#   DEVICE: bash benchmarks/gpu_host_checks.sh remote-verify       # PASS/FAIL of the thresholds from $OUT/bench.json
# The machine keeps /opt/gpu-bundle, /opt/gpu-extra, the engine cache and the videos only while it is held (<= 30 min).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
WHEELS=.gpu-wheels
WHEELS2=.gpu-wheels2
EXTRA=/opt/gpu-extra
VIDEOS=${VCD_BENCH_VIDEOS:-/tmp/vcd-bench-videos}
OUTDIR=${OUT:-/tmp/vcd-bench-out}
PY310="${PY310:-$(pyenv root 2>/dev/null)/versions/3.10.13}/bin/python3.10"

remote_env() {
  source /opt/gpu-bundle/env.sh
  export PYTHONPATH="$EXTRA:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  export VCD_TRT_CACHE=/tmp/vcd-trt-cache PYTHONUNBUFFERED=1 VCD_CUDA_FATBIN="$EXTRA/native/preprocess_kernels.fatbin"
  mkdir -p "$OUTDIR"
}

case "${1:-}" in
  prepare)
    exclude="$(git rev-parse --git-path info/exclude)"; mkdir -p "$(dirname "$exclude")"
    for d in /.gpu-wheels/ /.gpu-wheels2/ /.gpu-bundle/; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
    bash ../shared/gpu-bundle/build.sh 40
    # Two carries: the working tree (~18 MB) plus one folder must stay under the 64 MiB transfer limit.
    rm -rf "$WHEELS" "$WHEELS2" && mkdir -p "$WHEELS/native" "$WHEELS2"
    # Only the native parts of vcd-runtime for CPython 3.10 (the checkout's runtime/ supplies the rest).
    tmp=$(mktemp -d)
    "$PY310" -m pip wheel -q --no-deps -w "$tmp" .
    unzip -q -j "$tmp"/vcd_runtime-*.whl 'vcd_core*.so' 'runtime/gpu/preprocess_kernels.fatbin' -d "$WHEELS/native" \
      || { echo "wheel lacks vcd_core or the CUDA fatbin (nvcc missing?)" >&2; exit 2; }
    rm -rf "$tmp"
    dl310() {
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$@"
    }
    dl310 -d "$WHEELS" av==17.1.0
    dl310 -d "$WHEELS2" pytest==8.3.4 pluggy==1.5.0 iniconfig==2.0.0 exceptiongroup==1.2.2 tomli==2.2.1 hypothesis==6.122.3 \
      attrs==24.3.0 sortedcontainers==2.4.0 packaging==24.2 pandas==2.2.3 python-dateutil==2.9.0.post0 pytz==2024.2 \
      tzdata==2024.2 six==1.17.0 tqdm==4.67.1
    du -sh "$WHEELS" "$WHEELS2"; echo "bundle parts: $(cat "${BUNDLE_CACHE:-$HOME/.cache/gpu-bundle}/parts/COUNT")" ;;
  place)
    bash ../shared/gpu-bundle/build.sh --place "$2" .gpu-bundle ;;
  remote-wheels)  # run twice: carry [".gpu-wheels"], then carry [".gpu-wheels2"]; installs are additive
    source /opt/gpu-bundle/env.sh
    mkdir -p "$EXTRA/native"
    for dir in "$WHEELS" "$WHEELS2"; do
      [[ -d "$dir" ]] || continue
      ls "$dir"/*.whl >/dev/null 2>&1 && python3.10 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$EXTRA" "$dir"/*.whl
      [[ -d "$dir/native" ]] && cp "$dir"/native/vcd_core*.so "$EXTRA/" && cp "$dir/native/preprocess_kernels.fatbin" "$EXTRA/native/"
    done
    PYTHONPATH="$EXTRA" python3.10 -c "import vcd_core, av, tensorrt, pycuda.driver as c, PyNvVideoCodec as n; c.init(); print('ok', tensorrt.__version__, c.Device(0).name(), 'PyNvVideoCodec', getattr(n, '__version__', '?'))" ;;
  remote-tests)
    remote_env
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUTDIR/gpu.txt"
    FAIL_WITHOUT_CUDA=1 python3.10 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_preprocess.py tests/test_nvdec_decoder.py tests/test_trt_backend.py tests/test_robustness.py 2>&1 | tee "$OUTDIR/gpu_tests.txt" ;;
  remote-videos)
    remote_env
    python3.10 - "$VIDEOS" <<'PY'
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import numpy as np
sys.path.insert(0, "tests")
from video_factory import write_video
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
# VSC-like mix: 30 fps, 10..40 s, 720p/1080p/480p, a few portrait (rotated) ones
specs = [(i, [720, 1080, 480][i % 3], [1280, 1920, 854][i % 3], 300 + 30 * (i % 31), 90 if i % 17 == 5 else 0) for i in range(48)]
def make(spec):
    i, h, w, n, rot = spec
    write_video(out / f"R{i:05d}.mp4", num_frames=n, height=h, width=w, fps=30, seed=i, rotation=rot)
    return i
with ProcessPoolExecutor(16) as pool:
    print("videos:", len(list(pool.map(make, specs))), "in", out)
PY
    ;;
  remote-bench)
    remote_env
    python3.10 -m runtime.bench --videos "$VIDEOS" --backends gpu,gpu-serial,cpu,naive --json "$OUTDIR/bench.json" \
      --workers 7 --batch 256 --cpu-workers 16 --engine-cache "$VCD_TRT_CACHE" 2>&1 | tee "$OUTDIR/bench.txt"
    for n in 1 12; do  # NVDEC session sweep (decode-only + gpu end-to-end)
      python3.10 -m runtime.bench --videos "$VIDEOS" --backends gpu --json "$OUTDIR/bench_workers$n.json" \
        --workers $n --batch 256 --engine-cache "$VCD_TRT_CACHE" 2>&1 | tail -12 | tee "$OUTDIR/bench_workers$n.txt"
    done ;;
  remote-verify)
    python3 - "$OUTDIR/bench.json" <<'PY'
import json, sys
checks = json.load(open(sys.argv[1]))["checks"]
rules = [("trt_vs_ort_min_cosine", lambda v: v >= 0.999, ">= 0.999"),
         ("gpu_over_nvdec_decode_only", lambda v: v >= 0.8, ">= 0.8"),
         ("gpu_over_naive", lambda v: v >= 10, ">= 10"),
         ("gpu_worst_seconds_per_video", lambda v: v < 10, "< 10 s")]
failed = 0
for key, ok, text in rules:
    value = checks.get(key)
    status = "MISSING" if value is None else ("PASS" if ok(value) else "FAIL")
    failed += status != "PASS"
    print(f"{status:8} {key} = {value} (want {text})")
sys.exit(1 if failed else 0)
PY
    ;;
  *) sed -n 2,22p "$0"; exit 2 ;;
esac
