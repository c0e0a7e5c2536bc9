#!/usr/bin/env bash
# One prepared GPU check for the GPU host (issue 15 item 2): at most two device calls, the host's own Python 3.12.
#
#   HERE:   bash benchmarks/gpu_host_checks.sh prepare [--dry-run] [--offline]
#             cp312 wheels (PyNvVideoCodec 2.2.4, pycuda built here against CUDA 13 headers, PyAV, faiss-cpu, pytools,
#             platformdirs, mako, the project's own cp312 wheel) -> checked (tags, one version each, libraries resolve,
#             size) -> installed into a site folder, xz-packed, with mini-VSC queries filling the rest of the budget, into
#             .gpu-wheels/part-000 and part-001 (+ MANIFEST.json). --dry-run: build and check, write no parts.
#   DEVICE: bash benchmarks/gpu_host_checks.sh remote     # call 1: carry [".gpu-wheels/MANIFEST.json", ".gpu-wheels/part-000"]
#   DEVICE: bash benchmarks/gpu_host_checks.sh remote     # call 2: carry [".gpu-wheels/MANIFEST.json", ".gpu-wheels/part-001"]
#             each call stages what it carries (verified, resumable); the call that completes the set installs it and runs:
#             nvidia-smi, imports + driver, `pytest -m gpu` with FAIL_WITHOUT_CUDA=1, runtime.bench on the carried
#             queries (gpu,gpu-serial,cpu,naive), threshold verdicts. Results: $OUT/{summary.txt,gpu.txt,env.json,
#             gpu_tests.txt,bench.json,bench.txt,verify.txt} (7 files).
#   HERE:   bash benchmarks/gpu_host_checks.sh remote --fake   # the same flow without a GPU: CUDA steps SKIPPED, with reasons
#
# TensorRT: the host's Python 3.12 has none, so the TensorRT tests and the gpu/gpu-serial bench modes need the offline
# TensorRT bundle (benchmarks/gpu_host/build_trt_bundle.sh + remote.sh). When /opt/vcd-trt/env.sh exists (installed in an
# earlier call of the same warm machine) `remote` uses that bundle's Python 3.10 instead, with the whole GPU stack.
# Staged files live under /tmp/vcd-gpu-check only while the machine stays warm (30 s after a call).
# Inner limits keep one call under the device tool's 10 minutes: gpu tests ${VCD_TESTS_TIMEOUT:-270} s (the first
# TensorRT engine build, ~2 min, happens there and is cached for the bench), bench ${VCD_BENCH_TIMEOUT:-240} s.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
HERE="$ROOT/benchmarks/gpu_host"
CACHE="${VCD_BUNDLE_CACHE:-$HOME/.cache/vcd-gpu-bundle}"
CARRY_DIR="${VCD_CHECK_CARRY:-$ROOT/.gpu-wheels}"
LIMIT_MIB=64            # one device call: working tree + carried paths
MAX_CALLS=2

tree_bytes() {  # what travels on every call anyway: tracked + untracked-not-ignored files
  { git ls-files -z; git ls-files -z -o --exclude-standard; } | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}'
}

prepare() {
  local dry=0 offline=0
  for a in "$@"; do case "$a" in --dry-run) dry=1 ;; --offline) offline=1 ;; *) echo "unknown option $a" >&2; exit 2 ;; esac; done
  local py312="${PY312:-$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python3.12}"
  [[ -x "$py312" ]] || { echo "need CPython 3.12 at $py312 (set PY312)" >&2; exit 2; }
  local w="$CACHE/wheels312" t0=$(date +%s)
  mkdir -p "$w/project"
  if (( ! offline )); then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$w" \
      pynvvideocodec==2.2.4 av==19.0.2 faiss-cpu==1.15.1 pytools==2026.1.1 platformdirs==4.14.9 mako==1.4.3
    ls "$w"/pycuda-*-cp312-*.whl >/dev/null 2>&1 || bash "$HERE/build_pycuda.sh" "$py312" "$w" "${CUDA_ROOT:-/usr/local/cuda}"
    rm -f "$w"/project/*.whl
    nice -n 19 "$py312" -m pip wheel -q --no-deps -w "$w/project" .
  fi
  local wheels=("$w"/*.whl "$w"/project/*.whl)
  [[ -e "${wheels[0]}" && -e "${wheels[-1]}" ]] || { echo "no wheels in $w (run without --offline first)" >&2; exit 2; }
  unzip -l "$w"/project/vcd_runtime-*.whl | grep -q 'preprocess_kernels.fatbin' || { echo "project wheel lacks the CUDA fatbin (nvcc missing?)" >&2; exit 2; }
  local tree budget part
  tree=$(tree_bytes)
  part=$(( LIMIT_MIB * 1048576 - tree - 1048576 ))   # 1 MiB margin for the manifest and tree drift
  budget=$(( MAX_CALLS * part ))
  (( part >= 8 * 1048576 )) || { echo "the working tree ($(( tree / 1048576 )) MiB) leaves no room in a ${LIMIT_MIB} MiB call: untracked files?" >&2; exit 2; }
  echo "working tree $(( tree / 1048576 )) MiB -> parts of $(( part / 1048576 )) MiB, $MAX_CALLS calls"
  rm -rf "$CACHE/check312" && mkdir -p "$CACHE/check312/wheels"
  cp "${wheels[@]}" "$CACHE/check312/wheels/"
  local site="$CACHE/check312/payload/site"
  mkdir -p "$site"
  "$py312" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$site" "$CACHE"/check312/wheels/*.whl
  find "$site" -depth -type d \( -name __pycache__ -o -name tests \) -exec rm -rf {} +
  # PyNvVideoCodec also unpacks samples, benchmarks and FFmpeg's source tarball; pycuda is built with -g
  rm -rf "$site/bin" "$site/samples" "$site/benchmarks" "$site/external"
  strip --strip-debug "$site"/pycuda/*.so
  # of the project's wheel only vcd_core and the kernels travel: the checkout has runtime/ and the 17 MB of ONNX models
  mkdir -p "$site/_vcd_native" && mv "$site"/runtime/*/preprocess_kernels.fatbin "$site/_vcd_native/" && rm -rf "$site/runtime"
  # the wheels travel installed and xz-packed (below), so the size limit applies to that, not to the .whl files
  python3 "$HERE/wheelset.py" check "$CACHE/check312/wheels" --python 3.12 --site "$site"
  # the modules that import without numpy or a GPU (numpy is the host's; libcuda is stubbed here)
  mkdir -p "$CACHE/stub-libcuda" && echo "" | gcc -shared -x c - -o "$CACHE/stub-libcuda/libcuda.so.1" -Wl,-soname,libcuda.so.1
  LD_LIBRARY_PATH="$CACHE/stub-libcuda" PYTHONPATH="$site" "$py312" -c "
import importlib.util as u, av, vcd_core
missing = [m for m in ('av', 'faiss', 'pycuda', 'PyNvVideoCodec', 'vcd_core', 'pytools', 'mako', 'platformdirs') if u.find_spec(m) is None]
assert not missing, missing
print('imports resolvable (cp312): av', av.__version__, '| vcd_core | faiss, pycuda, PyNvVideoCodec found (they need numpy / the driver)')"
  (cd "$site" && tar -cf - . | nice -n 19 xz -${XZ_LEVEL:-6} -T2 -c > "$CACHE/check312/payload/site.tar.xz") && rm -rf "$site"
  local have; have=$(stat -c %s "$CACHE/check312/payload/site.tar.xz")
  echo "site (xz): $(( have / 1048576 )) MiB of a $(( budget / 1048576 )) MiB budget"
  (( have < budget )) || { echo "the cp312 site does not fit $MAX_CALLS calls" >&2; exit 1; }
  # fill the rest with mini-VSC queries (real, H.264): the dataset builder's small set
  local ds="${VCD_DATASET:-/work/data/mini-vsc-small}"
  if [[ ! -d "$ds/query" ]] && (( ! offline )); then python3 -m benchmarks.build_dataset --size small --out "$ds" --seed 0; fi
  mkdir -p "$CACHE/check312/payload/videos"
  local room=$(( budget - have - 262144 )) n=0 size
  if [[ -d "$ds/query" ]]; then
    for v in "$ds"/query/*.mp4; do
      size=$(( $(stat -c %s "$v") + 1024 ))
      (( size <= room )) || continue
      cp "$v" "$CACHE/check312/payload/videos/"; room=$(( room - size )); n=$(( n + 1 ))
    done
  fi
  echo "mini-VSC queries carried: $n (from $ds; the host synthesises VSC-like clips when none are carried)"
  if (( dry )); then
    echo "dry run: wheel set ok, payload $(( (budget - room) / 1048576 )) MiB <= $(( budget / 1048576 )) MiB in <= $MAX_CALLS calls; no parts written ($(( $(date +%s) - t0 )) s)"
    return 0
  fi
  python3 "$HERE/bundle.py" pack "$CACHE/check312/payload" "$CARRY_DIR" --part-mib "$(awk "BEGIN {print $part / 1048576}")" --compressor none --name vcd-gpu-check-cp312
  local count; count=$(ls "$CARRY_DIR"/part-* | wc -l)
  (( count <= MAX_CALLS )) || { echo "$count parts: more than $MAX_CALLS calls" >&2; exit 1; }
  du -sh "$CARRY_DIR"/part-*
  echo "prepared in $(( $(date +%s) - t0 )) s; device calls: for k in 000..$(printf '%03d' $(( count - 1 ))): carry [\".gpu-wheels/MANIFEST.json\", \".gpu-wheels/part-K\"], command: bash benchmarks/gpu_host_checks.sh remote"
}

remote() {
  local fake=0
  [[ "${1:-}" == "--fake" ]] && fake=1
  # a fake run here stages only a carry folder named explicitly: .gpu-wheels holds cp312 builds for the host
  (( fake )) && [[ -z "${VCD_CHECK_CARRY:-}" ]] && CARRY_DIR=/nonexistent
  local work="${VCD_CHECK_WORK:-/tmp/vcd-gpu-check}"
  local outdir="${OUT:-$work/out}"
  mkdir -p "$outdir" "$work"
  local summary="$outdir/summary.txt"
  : > "$summary"
  note() { echo "$*" | tee -a "$summary"; }
  local t0=$(date +%s) failed=0
  note "== vcd-runtime GPU check $(date -u +%FT%TZ)$( (( fake )) && echo ' (fake: no GPU expected)')"
  export PYTHONUNBUFFERED=1

  # 1. stage the carried part(s); install when complete
  local pyhost="${PYTHON:-python3}" payload="$work/payload"
  if [[ -f "$CARRY_DIR/MANIFEST.json" ]]; then
    "$pyhost" "$HERE/bundle.py" stage "$CARRY_DIR" --stage-dir "$work/stage" | tee -a "$summary"
    if ! "$pyhost" "$HERE/bundle.py" status --stage-dir "$work/stage" >/dev/null; then
      note "NEXT: carry the next part and run this again (nothing else runs until the set is complete)"; return 0
    fi
    "$pyhost" "$HERE/bundle.py" install --stage-dir "$work/stage" --dest "$payload" | tee -a "$summary"
    if [[ -f "$payload/site.tar.xz" ]]; then
      mkdir -p "$payload/site" && "$pyhost" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$payload/site.tar.xz" "$payload/site" \
        && rm -f "$payload/site.tar.xz"
    fi
  else
    note "no .gpu-wheels/MANIFEST.json carried: using what is installed ($payload, /opt/vcd-trt)"
  fi

  # 2. the interpreter: the TensorRT bundle's Python 3.10 when installed, else the host's Python 3.12 + the carried site
  local py="$pyhost"
  if [[ -f /opt/vcd-trt/env.sh ]]; then
    # shellcheck disable=SC1091
    source /opt/vcd-trt/env.sh; py=python3.10; note "python: TensorRT bundle (/opt/vcd-trt, $($py -V 2>&1))"
  else
    [[ -d "$payload/site" ]] && export PYTHONPATH="$payload/site${PYTHONPATH:+:$PYTHONPATH}"
    local fb; fb=$(ls "$payload"/site/_vcd_native/preprocess_kernels.fatbin "$payload"/site/runtime/*/preprocess_kernels.fatbin 2>/dev/null | head -1 || true)
    [[ -n "$fb" ]] && export VCD_CUDA_FATBIN="$fb"
    note "python: $($py -V 2>&1) ($(command -v "$py")) + ${payload}/site"
  fi
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # the checkout's runtime/ wins over a wheel's copy
  export VCD_TRT_CACHE="${VCD_TRT_CACHE:-$work/trt-cache}"

  # 3. nvidia-smi
  if command -v nvidia-smi >/dev/null 2>&1 && (( ! fake )); then
    nvidia-smi > "$outdir/gpu.txt" 2>&1 || failed=1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >> "$outdir/gpu.txt" 2>&1 || true
    head -20 "$outdir/gpu.txt"; note "nvidia-smi: $(sed -n '$p' "$outdir/gpu.txt")"
  else
    note "SKIPPED nvidia-smi: $( (( fake )) && echo 'fake run' || echo 'not on PATH')" | tee "$outdir/gpu.txt"
  fi

  # 4. imports + driver
  "$py" - "$outdir/env.json" "$fake" <<'PY' 2>&1 | tee -a "$summary" || failed=1
import importlib, json, subprocess, sys
out, fake = sys.argv[1], sys.argv[2] == "1"
env = {"python": sys.version.split()[0], "packages": {}, "driver": None}
for name in ("numpy", "av", "faiss", "onnxruntime", "vcd_core", "pycuda", "PyNvVideoCodec", "tensorrt", "runtime"):
    try:
        mod = importlib.import_module(name)
        env["packages"][name] = str(getattr(mod, "__version__", "ok"))
    except Exception as exc:  # noqa: BLE001
        env["packages"][name] = f"MISSING: {type(exc).__name__}: {exc}"
try:
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
except OSError:
    ldconfig = ""
env["driver_libraries"] = {lib: lib in ldconfig for lib in ("libcuda.so.1", "libnvcuvid.so.1", "libnvidia-encode.so.1")}
if fake:
    env["driver"] = "SKIPPED: fake run"
else:
    try:
        import pycuda.driver as cuda
        cuda.init()
        dev = cuda.Device(0)
        env["driver"] = {"version": cuda.get_driver_version(), "devices": cuda.Device.count(), "name": dev.name(),
                         "compute_capability": list(dev.compute_capability()), "memory_bytes": dev.total_memory()}
    except Exception as exc:  # noqa: BLE001
        env["driver"] = f"FAILED: {type(exc).__name__}: {exc}"
try:
    from runtime.device.cuda import gpu_runtime_status
    env["gpu_runtime_status"] = list(gpu_runtime_status()) if not fake else "SKIPPED: fake run"
except Exception as exc:  # noqa: BLE001 - the runtime's layout moves; report, don't stop
    env["gpu_runtime_status"] = f"FAILED: {type(exc).__name__}: {exc}"
json.dump(env, open(out, "w"), indent=2)
for k, v in env["packages"].items():
    print(f"  {k:15} {v}")
print("  driver:", env["driver"], "| driver libraries:", env["driver_libraries"])
print("  gpu_runtime_status:", env["gpu_runtime_status"])
PY

  # 5. the gpu tests, FAIL_WITHOUT_CUDA=1 (the TensorRT-free ones only when this Python has no TensorRT)
  local files=(tests/test_cuda_preprocess.py tests/test_nvdec_decoder.py tests/test_trt_backend.py tests/test_torch_backend.py tests/test_robustness.py)
  if (( fake )); then
    note "gpu tests: fake run, so without FAIL_WITHOUT_CUDA (they must skip cleanly):"
    env -u FAIL_WITHOUT_CUDA timeout 300 "$py" -m pytest -q -p no:cacheprovider -m gpu -rs "${files[@]}" > "$outdir/gpu_tests.txt" 2>&1 || failed=1
  elif "$py" -c "import tensorrt" 2>/dev/null; then
    note "gpu tests: FAIL_WITHOUT_CUDA=1 pytest -m gpu (full stack; builds and caches the engine, ~2 min)"
    FAIL_WITHOUT_CUDA=1 timeout "${VCD_TESTS_TIMEOUT:-270}" "$py" -m pytest -q -p no:cacheprovider -m gpu -rA "${files[@]}" > "$outdir/gpu_tests.txt" 2>&1 || failed=1
  else
    note "gpu tests: NO TensorRT in $($py -V 2>&1): FAIL_WITHOUT_CUDA=1 pytest -m 'gpu and not tensorrt' (NVDEC, CUDA kernels, PyTorch FP16)"
    FAIL_WITHOUT_CUDA=1 timeout "${VCD_TESTS_TIMEOUT:-270}" "$py" -m pytest -q -p no:cacheprovider -m "gpu and not tensorrt" -rA "${files[@]}" > "$outdir/gpu_tests.txt" 2>&1 || failed=1
  fi
  note "  $(tail -1 "$outdir/gpu_tests.txt")"

  # 6. videos: the carried mini-VSC queries, else synthetic VSC-like clips (no network on the host)
  local videos="$payload/videos"
  if ! ls "$videos"/*.mp4 >/dev/null 2>&1; then
    videos="$work/videos"; local count="${VCD_FAKE_VIDEOS:-16}"
    note "no carried queries: synthesising $count VSC-like clips in $videos"
    "$py" - "$videos" "$count" "$fake" <<'PY' 2>&1 | tee -a "$summary"
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
sys.path.insert(0, "tests")
from video_factory import write_video
out, count, fake = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
out.mkdir(parents=True, exist_ok=True)
# fake: tiny clips (flow only); host: 30 fps, 10..20 s, 720p/480p/360p, one portrait
sizes = [(64, 96)] if fake else [(720, 1280), (480, 854), (360, 640)]
specs = [(i, *sizes[i % len(sizes)], (20 if fake else 300 + 30 * (i % 11)), 90 if i % 7 == 5 else 0) for i in range(count)]
def make(spec):
    i, h, w, n, rot = spec
    write_video(out / f"Q{i:06d}.mp4", num_frames=n, height=h, width=w, fps=30, seed=i, rotation=rot)
with ProcessPoolExecutor(16) as pool:
    list(pool.map(make, specs))
PY
  fi
  note "videos: $(ls "$videos"/*.mp4 | wc -l) in $videos ($(du -sh "$videos" | cut -f1))"

  # 7. the benchmark, all modes side by side (modes without their stack report 'skipped' with the reason)
  local gpu_engine=trt
  "$py" -c "import tensorrt" 2>/dev/null || gpu_engine=torch  # the part-1 peer: PyTorch FP16 (issue 15)
  timeout "${VCD_BENCH_TIMEOUT:-240}" "$py" -m runtime.bench --videos "$videos" --backends gpu,gpu-serial,cpu,naive --json "$outdir/bench.json" \
    --engine-cache "$VCD_TRT_CACHE" --gpu-engine "$gpu_engine" $( (( fake )) && echo "--infer-seconds 0.2 --cpu-workers 2" ) > "$outdir/bench.txt" 2>&1 || failed=1
  tail -25 "$outdir/bench.txt" | tee -a "$summary"

  # 8. the acceptance thresholds (MISSING where a side was not measured)
  "$py" - "$outdir/bench.json" <<'PY' > "$outdir/verify.txt" 2>&1 || true
import json, sys
checks = json.load(open(sys.argv[1])).get("checks", {})
rules = [("trt_vs_ort_min_cosine", lambda v: v >= 0.999, ">= 0.999"), ("gpu_over_nvdec_decode_only", lambda v: v >= 0.8, ">= 0.8"),
         ("gpu_over_naive", lambda v: v >= 10, ">= 10"), ("gpu_worst_seconds_per_video", lambda v: v < 10, "< 10 s")]
for key, ok, text in rules:
    value = checks.get(key)
    print(f"{'MISSING' if value is None else ('PASS' if ok(value) else 'FAIL'):8} {key} = {value} (want {text})")
PY
  tee -a "$summary" < "$outdir/verify.txt"
  note "RESULT: $( (( failed )) && echo 'some steps FAILED (see the files above)' || echo 'all steps ran') in $(( $(date +%s) - t0 )) s; files in $outdir: $(ls "$outdir" | tr '\n' ' ')"
  (( fake )) && return 0 || return $failed
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  remote) shift; remote "$@" ;;
  *) sed -n 2,22p "$0"; exit 2 ;;
esac
