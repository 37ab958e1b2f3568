#!/usr/bin/env bash
# The main job, set-up included:
#   bash tools/run_main_job.sh [extra tools/train.py args, e.g. --amp]
# 1. sets up .venv (tools/setup_env.sh; fast when already done),
# 2. generates the synthetic shapes dataset in data/shapes (once),
# 3. trains the small RetinaNet of configs/demo/retina_r18_fpn_shapes.py and
#    evaluates it with CocoMetric (the COCO AP table is printed),
# 4. draws its detections on four val images into detections.png.
# Outputs go to $WORK_DIR (default work_dirs/main_job).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
PY=${FOCAL_RETINA_VENV:-$ROOT/.venv}/bin/python
CONFIG=configs/demo/retina_r18_fpn_shapes.py
WORK=${WORK_DIR:-work_dirs/main_job}

"$PY" tools/make_shapes.py --out data/shapes
# Mixed precision where the hardware has it: bf16 autocast on CPUs with
# native bf16 (AVX-512 BF16 / AMX; 1.8x faster here), fp16 on CUDA.
amp=()
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null || \
    "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    amp=(--amp)
fi
start=$(date +%s)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK" "${amp[@]}" "$@"
train_s=$(( $(date +%s) - start ))
ckpt=$(cat "$WORK/last_checkpoint")
"$PY" tools/infer.py "$CONFIG" "$ckpt" data/shapes/val/00000[0-3].png \
    --score-thr 0.5 --out-dir "$WORK/infer" --grid "$WORK/detections.png"
"$PY" tools/summarize_run.py "$WORK" --train-seconds "$train_s" \
    --checkpoint "$ckpt" --image "$WORK/detections.png"
