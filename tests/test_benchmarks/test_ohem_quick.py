"""``benchmarks/ohem.py --quick`` runs every Table 1d setting and prints a
complete table of step times relative to FL."""
import os
import os.path as osp
import subprocess
import sys

from tests.conftest import ROOT

SETTINGS = [  # FL, then the paper's order of Table 1d
    'fl', 'ohem-b128-nms07', 'ohem-b256-nms07', 'ohem-b512-nms07',
    'ohem-b128-nms05', 'ohem-b256-nms05', 'ohem-b512-nms05',
    'ohem13-b128-nms05', 'ohem13-b256-nms05', 'ohem13-b512-nms05'
]


def test_ohem_benchmark_quick():
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = subprocess.run(
        [sys.executable,
         osp.join(ROOT, 'benchmarks', 'ohem.py'), '--quick'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [[c.strip() for c in line.strip('|').split('|')]
            for line in out.stdout.splitlines()
            if line.startswith('| fl ') or line.startswith('| ohem')]
    assert [r[0] for r in rows] == SETTINGS
    for name, ms, ratio, median, loss_ms, select_ms, share, kept in rows:
        assert float(ms) > 0 and float(ratio) > 0 and float(loss_ms) > 0
        assert float(median) >= float(ms)
        if name == 'fl':
            assert float(ratio) == 1.0 and kept == '-'
            assert float(select_ms) == 0 and float(share) == 0
        else:
            assert float(select_ms) > 0 and float(share) > 0
            assert float(select_ms) <= float(loss_ms)
            # 96 x 128 px has fewer survivors than the largest batches
            assert 0 < float(kept) <= int(name.split('-b')[1][:3])
