"""``benchmarks/dr_loss.py --quick`` runs and prints a complete table."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CASES = ('FocalFamilyLoss', 'mmdet FocalLoss', 'DRLoss per_batch',
         'DRLoss per_image')


def test_dr_loss_benchmark_quick():
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'benchmarks', 'dr_loss.py'), '--quick', '--device',
        'cpu'
    ],
                         cwd=ROOT,
                         env=env,
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [
        line.strip('|').split('|') for line in out.stdout.splitlines()
        if line.startswith('| cpu |')
    ]
    assert [r[1].strip() for r in rows] == list(CASES)
    for row in rows:
        ms, ms_ratio, mib, mib_ratio, value = map(float, row[2:7])
        assert ms > 0 and mib > 0 and value > 0
        assert all(v == v and v != float('inf')
                   for v in (ms_ratio, mib_ratio))  # finite
    focal = rows[0]
    assert float(focal[3]) == 1.0 and float(focal[5]) == 1.0
    # the cases really share their input: the fused focal loss prints
    # mmdet's value, and on --quick's one image the two DR groupings are
    # the same group (per_image = per_batch)
    value = {r[1].strip(): float(r[6]) for r in rows}
    assert value['FocalFamilyLoss'] == pytest.approx(
        value['mmdet FocalLoss'], abs=2e-4)
    assert value['DRLoss per_batch'] == pytest.approx(
        value['DRLoss per_image'], abs=2e-4)
    # the DR loss keeps no N x K activation: no more memory than the
    # fused focal loss (gradient + chunk temporaries)
    for row in rows[2:]:
        assert float(row[5]) <= 1.25
