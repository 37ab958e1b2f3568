"""2 gloo processes x 1 image == 1 process x 2 images, with the paper's
global normaliser; mmdet's per-GPU normaliser does not agree."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.conftest import free_port

pytestmark = pytest.mark.slow
WORKER = osp.join(
    osp.dirname(osp.abspath(__file__)), 'dist_equivalence_worker.py')


def run(out: str, normalizer: str, nproc: int) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')
    }
    env['OMP_NUM_THREADS'] = '1'
    if nproc == 1:
        cmd = [sys.executable, WORKER, out, normalizer]
    else:
        cmd = [
            sys.executable, '-m', 'torch.distributed.run',
            f'--nproc_per_node={nproc}', f'--master_port={free_port()}',
            WORKER, out, normalizer
        ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return torch.load(out)


def max_rel_diff(a: dict, b: dict) -> float:
    """Largest ||a - b|| / ||b|| over the parameter tensors; the norm is
    floored at 1e-6 so that biases still at ~0 (norm ~1e-8) do not turn
    float32 rounding into a large ratio."""
    return max(((a[k] - b[k]).norm() / b[k].norm().clamp(min=1e-6)).item()
               for k in a)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    return {
        (norm, n): run(str(tmp / f'{norm}_{n}.pth'), norm, n)
        for norm in ('global', 'per_gpu')
        for n in (1, 2)
    }


@pytest.mark.parametrize('step', [1, 3])
def test_global_normaliser_is_split_invariant(runs, step):
    single, dist2 = runs[('global', 1)][step], runs[('global', 2)][step]
    assert single.keys() == dist2.keys()
    assert max_rel_diff(dist2, single) < 1e-5


def test_steps_move_the_parameters(runs):
    steps = runs[('global', 1)]
    assert max_rel_diff(steps[3], steps[1]) > 1e-4


def test_per_gpu_normaliser_is_not(runs):
    single, dist2 = runs[('per_gpu', 1)][3], runs[('per_gpu', 2)][3]
    assert max_rel_diff(dist2, single) > 1e-4
