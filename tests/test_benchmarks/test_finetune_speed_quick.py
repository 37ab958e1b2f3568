"""``benchmarks/finetune_speed.py --quick`` times every variant, checks our
losses and detections against stock mmdet's, applies the configs' hooks
as the Runner would, and writes a results file with the table, the targets
and the profiles."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
TRAIN = ('stock fp32', 'stock bf16', 'ours fp32', 'ours bf16',
         'ours bf16 nchw', 'ours fp32 cl')
INFER = ('stock fp32', 'ours fp32', 'ours fp32 fused', 'ours fp32 nchw',
         'ours bf16')


def test_finetune_speed_quick(tmp_path):
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES='',
        OMP_NUM_THREADS='1',
        FOCAL_RETINA_RESULTS_DIR=str(tmp_path))
    out = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'benchmarks', 'finetune_speed.py'), '--quick',
        '--threads', '1', '--profile', 'all', '--results', 'ft_quick'
    ],
                         cwd=ROOT,
                         env=env,
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '### Fine-tuning speed' in out.stdout
    with open(tmp_path / 'ft_quick.json') as f:
        record = json.load(f)
    assert record['meta']['threads']['torch'] == 1
    assert record['rounds'] == 1 and record['quick']
    train, infer = record['results']['train'], record['results']['infer']
    assert tuple(train) == TRAIN and tuple(infer) == INFER
    for part in (train, infer):
        assert part['stock fp32']['ratio'] == 1.0
        for key, row in part.items():
            for field in ('median_s', 'ratio', 'ratio_min', 'ratio_max'):
                assert math.isfinite(row[field]) and row[field] > 0, key
    # the same weights and batch: our float32 losses are mmdet's
    assert train['ours fp32']['check']['max_rel_diff'] < 1e-5
    assert train['ours fp32 cl']['check']['max_rel_diff'] < 1e-5
    # the recipe's ChannelsLastHook: on under --amp only; the pretrained
    # config's before a test run, in float32 too
    assert record['recipe_step_hooks'] == ["ChannelsLastHook(when='bf16')"]
    assert [train[k]['channels_last']
            for k in TRAIN] == [False, False, False, True, False, True]
    assert [infer[k]['channels_last']
            for k in INFER] == [False, True, True, False, True]
    for key in ('ours fp32', 'ours fp32 fused', 'ours fp32 nchw'):
        check = infer[key]['check']
        assert check['identical'] and check['detections'] > 0, key
    assert not infer['ours bf16']['check']['identical']  # bf16 rounding
    # two targets, both measured; --profile all: a profile of each
    targets = record['targets']
    assert [t['target'] for t in targets] == [0.8, 0.95]
    assert all(t['measured'] > 0 for t in targets)
    assert targets[0]['variant'] in ('ours fp32', 'ours bf16')
    assert len(record['profiles']) >= 2
    for prof in record['profiles'].values():
        assert 0 < prof['convolution_share'] <= 1
        assert prof['top'] and prof['table'].startswith('| operator |')
    assert record['table'].count('\n') == 2 + len(TRAIN) + len(INFER) - 1
    assert record['verdicts'].count('target ≤') >= 2
