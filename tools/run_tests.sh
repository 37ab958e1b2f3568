#!/usr/bin/env bash
# The test suite, set-up included:  bash tools/run_tests.sh [pytest args]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
PY=${FOCAL_RETINA_VENV:-$ROOT/.venv}/bin/python
"$PY" -m pytest tests "$@"
