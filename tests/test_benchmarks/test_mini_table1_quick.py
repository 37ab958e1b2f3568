"""``benchmarks/mini_table1.py --quick`` trains and evaluates each of its
methods through tools/train.py and reports the table and the orderings."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
QUICK_METHODS = ('fl_g2', 'ohem', 'dr')
CLAIMS = ('no-prior CE', 'FL > alpha-CE', 'FL > OHEM', 'FL* ~ FL', 'DR >= FL',
          'FL gamma 2')
VERDICTS = ('holds', 'holds (within spread)', 'within spread (not resolved)',
            'does not hold', 'not measured')


def test_mini_table1_quick(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                     'MASTER_PORT')
    }
    env['CUDA_VISIBLE_DEVICES'] = ''  # a CPU test on any machine
    out = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'benchmarks', 'mini_table1.py'), '--quick', '--out',
        str(tmp_path)
    ],
                         cwd=ROOT,
                         env=env,
                         capture_output=True,
                         text=True,
                         timeout=420)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    text = out.stdout
    assert '### Orderings' in text
    rows = [[c.strip() for c in line.strip('|').split('|')]
            for line in text.splitlines() if line.startswith('| ')
            and line.split('|')[1].strip() in QUICK_METHODS]
    assert [r[0] for r in rows] == list(QUICK_METHODS)
    for row in rows:
        assert row[7] == 'ok', row  # trained and evaluated
        for cell in row[2:5]:  # AP, AP50, AP75 in percent
            assert 0.0 <= float(cell) <= 100.0
        assert row[8] and row[8] != 'n/a'  # the paper's number

    with open(tmp_path / 'mini_table1.json') as f:
        record = json.load(f)
    assert osp.isfile(tmp_path / 'mini_table1.md')
    assert record['args']['methods'] == list(QUICK_METHODS)
    for name in QUICK_METHODS:
        s = record['summary'][name]
        assert s['seeds'] == [0]
        assert math.isfinite(s['AP']) and s['spread'] is None
        (run, ) = record['runs'][name]
        assert run['status'] == 'ok'
        assert osp.isfile(osp.join(run['work_dir'], 'run.json'))
        assert record['overrides'][name]  # expressed as --cfg-options
    checks = record['orderings']
    assert [
        c['claim'].split(' (')[0][:len(p)] for c, p in zip(checks, CLAIMS)
    ] == list(CLAIMS)
    verdicts = {c['claim'].split(' (')[0]: c['verdict'] for c in checks}
    assert set(verdicts.values()) <= set(VERDICTS)
    # measured: FL vs OHEM and DR; not run with --quick: the CE runs, FL*
    # and the other gammas
    assert verdicts['FL > OHEM'] != 'not measured'
    assert verdicts['DR >= FL'] != 'not measured'
    assert verdicts['FL > alpha-CE'] == 'not measured'
    assert verdicts['FL* ~ FL'] == 'not measured'
