"""``benchmarks/deploy_speed.py --quick`` runs both models through every
backend and reports finite times and ratios."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BACKENDS = ('torch fp32', 'torch bf16', 'ort', 'ort graph-nms')


def test_deploy_speed_quick(tmp_path):
    pytest.importorskip('onnxruntime')
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    out = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'benchmarks', 'deploy_speed.py'), '--quick', '--out',
        str(tmp_path)
    ],
                         cwd=ROOT,
                         env=env,
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '### Deployment speed' in out.stdout
    assert 'graph optimisation all' in out.stdout
    with open(tmp_path / 'deploy_speed.json') as f:
        record = json.load(f)
    assert set(record['results']) == {'demo', 'R-50'}
    for res in record['results'].values():
        assert set(res['backends']) == set(BACKENDS)
        for backend, r in res['backends'].items():
            for key in ('median_ms', 'vs_fp32', 'vs_bf16'):
                assert math.isfinite(r[key]) and r[key] > 0, (backend, r)
        assert res['backends']['torch fp32']['vs_fp32'] == 1.0
    # one plain sentence per (model, onnxruntime variant, reference)
    assert out.stdout.count(' than torch ') == 8
