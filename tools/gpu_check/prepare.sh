#!/usr/bin/env bash
# Gathers what the GPU check needs on a machine that cannot fetch anything:
#   bash tools/gpu_check/prepare.sh [DEST]     (default DEST: .cache/gpu_carry)
#
# Run it where PyPI is reachable. It downloads, for CPython 3.12 on x86-64
# Linux, the wheels of the packages the GPU image lacks (mmengine, mmdet and
# their pure-Python or small binary dependencies, setuptools < 81 because
# mmcv's setup.py and mmengine import pkg_resources) and mmcv 2.1.0's source
# (no wheel exists for current torch; tools/gpu_check/run.sh builds it there
# for that GPU alone). The folder must stay under 64 MiB, the most a device
# call carries; the script checks that and prints the size.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=${1:-$ROOT/.cache/gpu_carry}
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
LIMIT_MIB=64

# The versions the test suite runs with here (requirements/), where the
# image has none. Pure-Python wheels (py3-none-any):
PURE=(
    mmengine==0.10.7
    mmdet==3.3.0
    addict==2.4.0
    yapf==0.43.0
    platformdirs==4.14.9
    termcolor==3.3.0
    terminaltables==3.1.10
    setuptools==80.10.2
)
# Compiled wheels for CPython 3.12 (numpy 2 builds: the image has numpy 2).
BINARY=(
    pycocotools==2.0.11
    shapely==2.2.0
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
    manylinux2014_x86_64 manylinux1_x86_64)

start=$(date +%s)
mkdir -p "$DEST"
pip_dl() {
    # (pip's notes on unreadable local find-links folders are noise here)
    "$PY" -m pip download --disable-pip-version-check -q --no-deps \
        -d "$DEST" "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}
pip_dl --only-binary=:all: --python-version 3.12 --implementation py \
    --abi none --platform any "${PURE[@]}"
plat=()
for p in "${PLATFORMS[@]}"; do plat+=(--platform "$p"); done
pip_dl --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" "${BINARY[@]}"
pip_dl --no-binary=:all: --no-build-isolation mmcv==2.1.0
# One version of each package: a stale second one would stop the install.
dups=$(ls "$DEST" | sed -E 's/-[0-9].*//; s/_/-/g' | tr A-Z a-z | sort |
    uniq -d)
if [ -n "$dups" ]; then
    echo "prepare.sh: $DEST holds two versions of: $dups; delete the" \
        "folder and run again" >&2
    exit 1
fi
bytes=$(du -sb "$DEST" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "prepare.sh: $(ls "$DEST" | wc -l) files, $mib MiB in $DEST" \
    "($(($(date +%s) - start)) s)"
if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "prepare.sh: $mib MiB is over the $LIMIT_MIB MiB a device call" \
        "carries" >&2
    exit 1
fi
