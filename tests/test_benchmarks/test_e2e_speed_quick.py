"""``benchmarks/e2e_speed.py --quick --profile`` runs on the CPU and reports
every table: speed of both models per option with finite ratios, FLOPs,
peak memory, the targets and the profile."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
OPTIONS = ('fp32', 'bf16', 'channels_last', 'fuse_conv_bn')  # no compile
INFER_ONLY = ('fuse_conv_bn', )


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) \
        and value > 0


def test_e2e_speed_quick(tmp_path):
    # CUDA_VISIBLE_DEVICES='': a CPU test on any machine
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    out = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'benchmarks', 'e2e_speed.py'), '--quick', '--profile',
        '--out',
        str(tmp_path)
    ],
                         cwd=ROOT,
                         env=env,
                         capture_output=True,
                         text=True,
                         timeout=420)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for title in ('### Speed', '### FLOPs', '### Peak memory', '### Targets',
                  '### Profile'):
        assert title in text, text[-3000:]
    rows = [[c.strip() for c in line.strip('|').split('|')]
            for line in text.splitlines() if line.startswith('| 256x320 |')]
    speed = {(r[1], r[2]): r for r in rows if r[1] in OPTIONS}
    assert set(speed) == {(o, p) for o in OPTIONS for p in ('train', 'infer')}
    for (option, phase), row in speed.items():
        if option in INFER_ONLY and phase == 'train':
            assert row[3] == 'n/a' and 'inference only' in row[6], row
            continue
        assert all(positive(float(v)) for v in row[3:6]), row
        assert all(positive(float(v)) for v in row[6].split()), row

    with open(tmp_path / 'e2e_speed.json') as f:
        record = json.load(f)
    assert osp.isfile(tmp_path / 'e2e_speed.md')
    machine = record['machine']
    assert machine['device'] == 'cpu' and machine['torch_threads'] >= 1
    res = record['results']['256x320']
    # the architectures share every tensor: ours runs stock's weights
    assert res['info']['copied_tensors'] > 300
    assert res['info']['own_tensors'] == 0
    for option in OPTIONS:
        for phase in ('train', 'infer'):
            s = res['speed'][option][phase]
            if option in INFER_ONLY and phase == 'train':
                assert 'error' in s
                continue
            assert len(s['pair_ratios']) == 2  # --quick: 2 reps
            assert all(positive(p) for p in s['pair_ratios'])
            assert positive(s['stock_median_ms'])
            assert positive(s['ours_median_ms'])
    flops = res['flops']
    # same network: same multiply-accumulates (R-50 at 256x320: ~19 G)
    assert flops['macs_stock'] == flops['macs_ours']
    assert 1.5e10 < flops['macs_stock'] < 2.5e10
    assert positive(flops['conv_gflops_fp32'])
    for phase in ('train', 'infer'):
        for model in ('stock', 'ours'):
            assert positive(res['memory'][phase][model]['peak_mib'])
    targets = {t['phase']: t for t in record['targets']}
    assert set(targets) == {'train', 'infer'}
    for t in targets.values():
        assert positive(t['measured'])
        assert t['met'] == (t['measured'] <= t['target'])
    for model in ('stock', 'ours'):
        prof = res['profile'][model]
        assert prof['train']['total'] > prof['train']['backward'] > 0
        assert prof['train']['  targets (get_targets)'] > 0
        assert prof['infer']['post-processing (predict_by_feat)'] > 0
