#!/usr/bin/env bash
# GPU-host side of the offline TensorRT bundle (built here by build_trt_bundle.sh). Run from the repo root.
#
#   bash benchmarks/gpu_host/remote.sh stage     # verify + stage every carried part in .gpu-bundle/trt (skips staged ones)
#   bash benchmarks/gpu_host/remote.sh install   # all parts staged -> /opt/vcd-trt (+ the carried project wheel)
#   bash benchmarks/gpu_host/remote.sh smoke     # imports, driver, a tiny FP16 engine from ONNX, which .so files got loaded
#   bash benchmarks/gpu_host/remote.sh status
# 'stage install smoke' may be given together (one device call). Staged parts live in /opt/vcd-trt-stage and,
# like /opt/vcd-trt, only while the machine stays warm (30 s after a call).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
CARRIED="${VCD_BUNDLE_DIR:-$ROOT/.gpu-bundle}"
STAGE="${VCD_TRT_STAGE:-/opt/vcd-trt-stage}"
DEST="${VCD_TRT_HOME:-/opt/vcd-trt}"
PY="${PYTHON:-python3}"   # any CPython >= 3.8 runs bundle.py (the host's 3.12)
BUNDLE="$PY $ROOT/benchmarks/gpu_host/bundle.py"

[[ $# -gt 0 ]] || set -- status
for cmd in "$@"; do
  case "$cmd" in
    stage)
      ls "$CARRIED"/trt/part-[0-9][0-9][0-9] >/dev/null 2>&1 || { echo "no part under $CARRIED/trt (carry .gpu-bundle/trt/MANIFEST.json and a part)" >&2; exit 2; }
      $BUNDLE stage "$CARRIED/trt" --stage-dir "$STAGE" ;;
    status)
      if [[ -f "$DEST/env.sh" ]]; then echo "installed in $DEST"; else $BUNDLE status --stage-dir "$STAGE" || true; fi ;;
    install)
      $BUNDLE install --stage-dir "$STAGE" --dest "$DEST"
      cp "$ROOT/benchmarks/gpu_host/env.sh" "$DEST/env.sh"   # the checkout's env.sh wins over the archive's
      if ls "$CARRIED"/project/native/vcd_core*.so >/dev/null 2>&1; then  # the project's native parts (the checkout has the rest)
        mkdir -p "$DEST/native" && cp "$CARRIED"/project/native/vcd_core*.so "$DEST/site/" \
          && cp "$CARRIED"/project/native/preprocess_kernels.fatbin "$DEST/native/" && echo "project native parts -> $DEST"
      elif whl=$(ls "$CARRIED"/project/vcd_runtime-*-cp310-*.whl 2>/dev/null | head -1) && [[ -n "$whl" ]]; then
        # the whole wheel: a zip of site-packages content, so unzipping it = pip install --target (no pip in the bundle)
        "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$whl" "$DEST/site" && echo "project wheel -> $DEST/site"
      else
        echo "note: no project native parts carried (.gpu-bundle/project/native): vcd_core and the CUDA kernels are missing" >&2
      fi
      rm -rf "$STAGE" ;;  # the parts are no longer needed (frees ~disk)
    smoke)
      # shellcheck disable=SC1091
      source "$DEST/env.sh"
      python3.10 - <<'PY'
import os, re, sys
import numpy as np
import tensorrt as trt
import pycuda.driver as cuda
import PyNvVideoCodec, av, faiss
cuda.init()
dev = cuda.Device(0)
print("python", sys.version.split()[0], "| tensorrt", trt.__version__, "| numpy", np.__version__, "| av", av.__version__,
      "| faiss", faiss.__version__, "| GPU", dev.name(), "sm_%d%d" % dev.compute_capability(), "| driver", cuda.get_driver_version())
ctx = dev.retain_primary_context(); ctx.push()
try:
    # tiny conv+relu network, FP16, cuBLAS/cuDNN tactic sources off (as runtime/infer/trt.py builds)
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    x = net.add_input("x", trt.float32, (1, 3, 32, 32))
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    conv = net.add_convolution_nd(x, 8, (3, 3), trt.Weights(w), trt.Weights(np.zeros(8, np.float32)))
    relu = net.add_activation(conv.get_output(0), trt.ActivationType.RELU)
    net.mark_output(relu.get_output(0))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    sources = int(config.get_tactic_sources())
    for name in ("CUBLAS", "CUBLAS_LT", "CUDNN"):
        sources &= ~(1 << int(getattr(trt.TacticSource, name)))
    config.set_tactic_sources(sources)
    plan = builder.build_serialized_network(net, config)
    assert plan is not None, "engine build failed (see TensorRT's log above)"
    engine = trt.Runtime(log).deserialize_cuda_engine(plan)
    print("FP16 engine built and deserialized:", engine.num_io_tensors, "io tensors,", plan.nbytes, "bytes")
finally:
    ctx.pop()
maps = open("/proc/self/maps").read()
loaded = sorted({os.path.basename(p) for p in re.findall(r"(/\S+\.so[.\d]*)", maps)})
print("loaded .so files:", " ".join(loaded))
print("cuBLAS/cuDNN loaded from:", sorted({p for p in re.findall(r"(/\S+lib(?:cublas|cublasLt|cudnn)\S*)", maps)}) or "nowhere")
PY
      ;;
    *) sed -n 2,10p "$0"; exit 2 ;;
  esac
done
