#!/usr/bin/env bash
# The main job, set-up included:
#   bash tools/run_main_job.sh [extra tools/train.py args, e.g. --amp off]
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
# Mixed precision where it is faster, measured rather than guessed from a
# CPU flag (AVX-512 BF16 without AMX trains slower in bf16): --amp auto
# times a step of the model in both precisions (cached per machine) and
# prints its choice with the two timings; fp16 on CUDA. An --amp on/off in
# the extra arguments overrides it.
start=$(date +%s) load0=$(cat /proc/loadavg 2>/dev/null || true)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK" --amp auto "$@"
train_s=$(( $(date +%s) - start ))
ckpt=$(cat "$WORK/last_checkpoint")
"$PY" tools/infer.py "$CONFIG" "$ckpt" data/shapes/val/00000[0-3].png \
    --score-thr 0.5 --out-dir "$WORK/infer" --grid "$WORK/detections.png"
"$PY" tools/summarize_run.py "$WORK" --train-seconds "$train_s" \
    --checkpoint "$ckpt" --image "$WORK/detections.png" \
    --results main_job --load-before "$load0"
