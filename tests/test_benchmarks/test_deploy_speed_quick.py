"""``benchmarks/deploy_speed.py --quick`` runs both models through every
backend (PyTorch fp32 / bf16, onnxruntime fp32 / in-graph NMS / int8,
OpenVINO fp32 / bf16 / int8) and reports finite times, ratios and peak
memory."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BACKENDS = ('torch fp32', 'torch bf16', 'ort', 'ort graph-nms', 'ort int8',
            'openvino fp32', 'openvino bf16', 'openvino int8')


def test_deploy_speed_quick(tmp_path):
    pytest.importorskip('onnxruntime')
    pytest.importorskip('openvino')
    pytest.importorskip('nncf')
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
    assert 'OpenVINO' in out.stdout and 'latency hint' in out.stdout
    with open(tmp_path / 'deploy_speed.json') as f:
        record = json.load(f)
    assert set(record['results']) == {'demo', 'R-50'}
    for res in record['results'].values():
        assert set(res['backends']) == set(BACKENDS)
        for backend, r in res['backends'].items():
            for key in ('median_ms', 'vs_fp32', 'vs_bf16', 'peak_rss_mib'):
                assert math.isfinite(r[key]) and r[key] > 0, (backend, r)
        assert res['backends']['torch fp32']['vs_fp32'] == 1.0
        # a process that imports torch and mmdet holds more than one that
        # runs the exported file alone
        mem = {b: r['peak_rss_mib'] for b, r in res['backends'].items()}
        assert mem['torch fp32'] > mem['ort'], mem
    # one plain sentence per (model, exported backend, reference) and the
    # fastest backend's verdict per model
    assert out.stdout.count(' than torch ') == 2 * 6 * 2
    assert set(record['best']) == {'demo', 'R-50'}
    assert out.stdout.count('fastest exported backend') == 2
