#!/usr/bin/env bash
# The GPU check on a lent GPU machine, in one command of at most 10 minutes:
#   bash tools/gpu_check/run.sh
# from the repository root, with .cache/gpu_carry (tools/gpu_check/prepare.sh)
# carried in. That machine has Python 3.12 with a CUDA build of torch and
# fetches nothing; this script
#   1. installs the carried wheels offline into a folder on PYTHONPATH (the
#      interpreter's own torch, numpy, opencv and scipy stay in use),
#   2. builds mmcv 2.1.0's ops from the carried source for this GPU's
#      architecture only (ninja, one job per core),
#   3. runs tools/gpu_check/check.py with the time that is left,
# and reports each step's status and seconds in check.py's table: a failed
# step does not stop the rest. Logs and the results file go to $OUT when it
# is set (the device tool brings that folder back), else to
# work_dirs/gpu_check. Without a CUDA device it says so in one line and
# exits 0.
#
# Environment: PYTHON (default python3), GPU_CHECK_TOTAL (seconds for the
# whole script, default 585), TORCH_CUDA_ARCH_LIST (default: the GPU's own,
# e.g. 9.0), GPU_CHECK_CARRY (default .cache/gpu_carry).
set -uo pipefail
T0=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
TOTAL=${GPU_CHECK_TOTAL:-585}
CARRY=${GPU_CHECK_CARRY:-$ROOT/.cache/gpu_carry}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
LOGS=${OUT:-$ROOT/work_dirs/gpu_check}
SITE=$WORK/site
SRC=$WORK/mmcv-2.1.0
export PYTHONUNBUFFERED=1
SETUP=()

elapsed() { echo $(($(date +%s) - T0)); }
# A set-up row for check.py's table: name, status, seconds, text.
row() { SETUP+=("$1=$2=$3=${4//[;=]/,}"); echo "[run.sh] $1: $2 ($3 s) $4"; }

if ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' \
    2>/dev/null; then
    if "$PY" -c 'import torch' 2>/dev/null; then
        exec "$PY" tools/gpu_check/check.py  # its one line, exit 0
    fi
    echo "gpu_check: $PY has no torch: no CUDA device to check"
    exit 0
fi
mkdir -p "$LOGS" "$WORK/logs" "$SITE"

# 1. the carried wheels --------------------------------------------------------
t=$(date +%s)
if [ ! -f "$CARRY/mmcv-2.1.0.tar.gz" ]; then
    echo "[run.sh] $CARRY has no mmcv-2.1.0.tar.gz: run" \
        "tools/gpu_check/prepare.sh where PyPI is reachable and carry" \
        ".cache/gpu_carry; the stages below will fail"
fi
if ls "$CARRY"/*.whl >/dev/null 2>&1 && "$PY" -m pip install -q \
    --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" "$CARRY"/*.whl \
    >"$WORK/logs/pip.log" 2>&1; then
    row install ok $(($(date +%s) - t)) "$(ls "$CARRY"/*.whl | wc -l) wheels"
else
    row install FAILED $(($(date +%s) - t)) \
        "$(tail -n 1 "$WORK/logs/pip.log" 2>/dev/null || echo "no wheels in $CARRY")"
fi
# The carried setuptools (< 81: mmcv's setup.py and mmengine import
# pkg_resources) comes first; the repository root makes `projects` and
# `benchmarks` importable. (mmcv joins $SITE once built, below.)
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"

# 2. mmcv's ops for this GPU -------------------------------------------------
t=$(date +%s)
ARCH=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch
print("%d.%d" % torch.cuda.get_device_capability(0))')}
if [ -z "${CUDA_HOME:-}" ]; then
    for d in /usr/local/cuda \
        "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"; do
        if [ -x "$d/bin/nvcc" ]; then CUDA_HOME=$d; break; fi
    done
fi
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
# ninja from the interpreter's environment (pip's ninja) if not on PATH:
# without it torch compiles the sources one at a time.
PATH="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')"):$PATH"
export PATH
# torch's CUDA headers include cuBLAS/cuSPARSE/cuSOLVER headers, which may
# live in the nvidia-* wheels rather than the toolkit; stand-ins (typedefs
# only, see stub_include/) cover any that are nowhere.
INC=$("$PY" - "$CUDA_HOME" <<'EOF'
import glob, os, site, sys, sysconfig
need = ('cublas_v2.h', 'cublasLt.h', 'cusparse.h', 'cusolverDn.h',
        'cusolver_common.h')
roots = [os.path.join(sys.argv[1], 'include'),
         os.path.join(sys.argv[1], 'targets', 'x86_64-linux', 'include')]
for base in {sysconfig.get_paths()['purelib'], *site.getsitepackages()}:
    roots += glob.glob(os.path.join(base, 'nvidia', '**', 'include'),
                       recursive=True)
dirs, missing = [], []
for header in need:
    found = [r for r in roots if os.path.isfile(os.path.join(r, header))]
    dirs += found[:1]
    if not found:
        missing.append(header)
print(':'.join(dict.fromkeys(dirs)) + ' ' + ','.join(missing))
EOF
)
HDRS=${INC%% *}
MISSING=${INC#* }
if [ -n "$MISSING" ]; then
    mkdir -p "$WORK/stub_include"
    for h in ${MISSING//,/ }; do
        cp "$ROOT/tools/gpu_check/stub_include/$h" "$WORK/stub_include/"
    done
    HDRS="$HDRS${HDRS:+:}$WORK/stub_include"
fi
export CPATH="$HDRS${CPATH:+:$CPATH}"
rm -rf "$SRC" && tar xzf "$CARRY"/mmcv-2.1.0.tar.gz -C "$WORK" 2>/dev/null
# torch removed THC; its THCAtomics.cuh only included ATen/cuda/Atomic.cuh
sed -i 's@#include <THC/THCAtomics.cuh>@#include <ATen/cuda/Atomic.cuh>@' \
    "$SRC/mmcv/ops/csrc/common/pytorch_cuda_helper.hpp" \
    "$SRC/mmcv/ops/csrc/pytorch/cuda/ms_deform_attn_cuda.cu"
# The biggest sources first (one of them compiles for minutes): started
# last, they would end the build alone while the other cores idle.
sed -i 's/^\( *\)extension = CUDAExtension$/&\n\1op_files.sort(key=lambda f: -os.path.getsize(f))/' \
    "$SRC/setup.py"
# leave the check at least 210 s
BUILD_LIMIT=$((TOTAL - $(elapsed) - 210))
[ "$BUILD_LIMIT" -lt 60 ] && BUILD_LIMIT=60  # (timeout 0 would mean none)
note="arch $ARCH, $(nproc) jobs, CUDA_HOME $CUDA_HOME"
note+=", ninja $(command -v ninja >/dev/null && echo yes || echo NO)"
[ -n "$MISSING" ] && note+=", stand-in headers: $MISSING"
(cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH \
    MAX_JOBS=$(nproc) timeout "$BUILD_LIMIT" "$PY" setup.py build_ext \
    --inplace) >"$WORK/logs/mmcv_build.log" 2>&1
rc=$?
# mmcv's package, its built ops and its metadata join the carried packages
# (not the source tree itself, whose tests/ would shadow ours)
ln -sfn "$SRC/mmcv" "$SITE/mmcv"
ln -sfn "$SRC/mmcv.egg-info" "$SITE/mmcv.egg-info"
if [ $rc = 0 ] && "$PY" -c 'from mmcv.ops import nms, sigmoid_focal_loss' \
    >>"$WORK/logs/mmcv_build.log" 2>&1; then
    row mmcv_build ok $(($(date +%s) - t)) "$note"
else
    log=$WORK/logs/mmcv_build.log
    why=$(grep -m1 -E ': error|error:' "$log" | cut -c1-150)
    [ -z "$why" ] && why=$(grep -E 'Error' "$log" | tail -n 1 | cut -c1-150)
    [ $rc = 124 ] && why="timeout after $BUILD_LIMIT s"
    row mmcv_build FAILED $(($(date +%s) - t)) "$note: ${why:-rc $rc}"
fi

# 3. the check ---------------------------------------------------------------
SETUP_JOINED=$(IFS=';'; echo "${SETUP[*]}")
BUDGET=$((TOTAL - $(elapsed) - 15))
GPU_CHECK_SETUP=$SETUP_JOINED "$PY" tools/gpu_check/check.py --device cuda \
    --budget "$BUDGET" --log-dir "$WORK/logs/stages" 2>&1 |
    tee "$LOGS/gpu_check.txt"
cp benchmarks/results/gpu_check.json "$LOGS/" 2>/dev/null
# the device tool brings back at most 8 files: the logs travel as one
tar czf "$LOGS/gpu_check_logs.tgz" -C "$WORK" logs 2>/dev/null
echo "[run.sh] done in $(elapsed) s; logs and results in $LOGS"
