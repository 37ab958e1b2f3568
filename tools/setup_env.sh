#!/usr/bin/env bash
# Idempotent set-up of the focal_retina environment: a virtualenv in the repo
# with torch, mmengine 0.10.7, mmcv 2.1.0 (built from source with its compiled
# ops), mmdet 3.3.0, pycocotools and this package in editable mode.
#
# Environment variables:
#   FOCAL_RETINA_VENV   virtualenv path            (default: <repo>/.venv)
#   FOCAL_RETINA_TORCH  pip spec for torch when none is installed (a torch
#                       importable by PYTHON is kept: the virtualenv then
#                       sees the interpreter's site-packages)
#                       (default: torch==2.13.0, the local CPU wheel here;
#                       GPU users: e.g. 'torch==2.5.1 --index-url
#                       https://download.pytorch.org/whl/cu124')
#   PYTHON              interpreter creating the virtualenv (default: python3)
#
# A second run only checks the install (a few seconds). The built mmcv wheel is
# kept in <repo>/.cache/wheels, keyed by torch version and CPU/CUDA, so a new
# virtualenv reuses it instead of compiling again (~9 minutes on 2 cores).
set -eEuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${FOCAL_RETINA_VENV:-$ROOT/.venv}
TORCH_SPEC=${FOCAL_RETINA_TORCH:-torch==2.13.0}
PY=$VENV/bin/python
STEP='start'
HINT=''

log() { echo "[setup] $*" >&2; }
step() { STEP=$1; HINT=$2; log "$STEP"; }
on_error() {
    echo "[setup] FAILED at step: $STEP" >&2
    echo "[setup] likely fix: $HINT" >&2
}
trap on_error ERR

pip_q() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

stack_ok() {
    [ -x "$PY" ] && "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import mmcv, mmdet, mmengine, pycocotools  # noqa: F401
from mmcv.ops import nms  # noqa: F401  (compiled ops present)
import projects.focal_retina  # noqa: F401
import cv2, onnx, onnxruntime  # noqa: F401  (requirements/deploy.txt)
import projects.focal_retina_runtime  # noqa: F401  (torch-free runtime)
assert mmengine.__version__ == '0.10.7', mmengine.__version__
assert mmcv.__version__ == '2.1.0', mmcv.__version__
assert mmdet.__version__ == '3.3.0', mmdet.__version__
assert md.version('focal_retina')
for pkg in ('openvino', 'nncf', 'tensorboard'):  # deploy.txt, optional.txt
    assert md.version(pkg), pkg
EOF
}

cd "$ROOT"
if stack_ok; then
    log "environment ready: $VENV"
    exit 0
fi

step 'create virtualenv' \
    "install python3 with venv support (Debian: apt-get install python3-venv)"
if [ ! -x "$PY" ]; then
    # An interpreter that already has torch (e.g. a CUDA image) lends it to
    # the virtualenv instead of a second, possibly CPU-only, install.
    if "${PYTHON:-python3}" -c 'import torch' 2>/dev/null; then
        log 'keeping the interpreter'"'"'s torch (--system-site-packages)'
        "${PYTHON:-python3}" -m venv --system-site-packages "$VENV"
    else
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
fi

step 'install build tools (setuptools>=77,<81, wheel, ninja)' \
    'check network access to PyPI; mmcv 2.1.0 needs setuptools < 81'
pip_q -r requirements/build.txt

step "install torch ($TORCH_SPEC)" \
    'set FOCAL_RETINA_TORCH to a torch spec that exists for your platform'
if ! "$PY" -c 'import torch' 2>/dev/null; then
    # shellcheck disable=SC2086  # the spec may carry pip options
    pip_q $TORCH_SPEC
fi

step 'install mmengine, numpy, pycocotools and test tools' \
    'check network access to PyPI'
pip_q 'mmengine==0.10.7' 'numpy>=1.24,<2' 'pycocotools>=2.0.7' \
    -r requirements/tests.txt

step 'build/install mmcv 2.1.0 with compiled ops' \
    'needs gcc/g++ and python headers; see build log above'
if ! "$PY" -c 'from mmcv.ops import nms' 2>/dev/null; then
    # CUDA ops only when a CUDA toolchain and a GPU are both present;
    # otherwise hide GPUs so mmcv's setup.py builds the CPU ops only.
    cuda=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')
    if [ "$cuda" = 1 ] && command -v nvcc >/dev/null; then
        flavour=cuda; export FORCE_CUDA=1
    else
        flavour=cpu; export FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=''
    fi
    tv=$("$PY" -c 'import torch; print(torch.__version__)')
    wheels=$ROOT/.cache/wheels/torch-$tv-$flavour
    mkdir -p "$wheels"
    if ! ls "$wheels"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        log "compiling mmcv 2.1.0 ($flavour ops); ~9 minutes on 2 cores"
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel \
            --disable-pip-version-check -q --no-deps --no-build-isolation \
            'mmcv==2.1.0' -w "$wheels"
    fi
    pip_q "$wheels"/mmcv-2.1.0-*.whl
fi

step 'install mmdet 3.3.0' 'check network access to PyPI'
pip_q 'mmdet==3.3.0'

step 'install focal_retina (editable)' 'run from a clone of the repository'
pip_q --no-deps --no-build-isolation -e "$ROOT"

step 'install onnx and onnxruntime (requirements/deploy.txt)' \
    'check network access to PyPI (pinned onnx/onnxruntime wheels)'
pip_q -r requirements/deploy.txt

step 'install tensorboard (tools/train.py --tensorboard)' \
    'check network access to PyPI (requirements/optional.txt pins it)'
pip_q "$(grep -m1 '^tensorboard==' requirements/optional.txt)"

step 'verify the stack' \
    'delete the virtualenv and .cache/wheels and run this script again'
if ! stack_ok; then
    "$PY" -c 'from mmcv.ops import nms; import mmdet, projects.focal_retina'
    false
fi
log "environment ready: $VENV"
