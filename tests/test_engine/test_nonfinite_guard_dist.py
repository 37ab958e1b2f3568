"""The NaN guard decides the same on every process.

DDP all-reduces the gradients, but each process has its own loss terms: a
term that is NaN on one process only (a logged term, or a term of an image
that only that process holds) must make every process stop (or skip)
together; otherwise one raises or skips while the others step, and the run
hangs in the next all-reduce or the replicas drift apart.
"""
import os
import tempfile
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from mmengine.optim import OptimWrapper

from projects.focal_retina.engine import NonFiniteGuardHook, NonFiniteLossError


class _Logger:

    def warning(self, msg: str) -> None:
        pass


def _outcome(rank: int, action: str) -> str:
    """One step of the guard on this process: 'step', 'skip' or 'stop'.

    Rank 1 alone logs a NaN loss term; both have the same finite gradient.
    """
    layer = nn.Linear(2, 1)
    wrapper = OptimWrapper(torch.optim.SGD(layer.parameters(), lr=0.1))
    layer(torch.ones(1, 2)).sum().backward()
    hook = NonFiniteGuardHook(action=action)
    nan = float('nan') if rank == 1 else 0.0
    hook._losses = dict(
        loss_cls=torch.tensor(1.0), acc_logged=torch.tensor(nan))
    runner = SimpleNamespace(iter=6, work_dir='w', logger=_Logger())
    try:
        stepped = hook._check(runner, wrapper)
    except NonFiniteLossError as exc:
        return 'stop: ' + str(exc).split(';')[0]
    grads_kept = all(p.grad is not None for p in layer.parameters())
    return 'step' if stepped and grads_kept else 'skip'


def _worker(rank: int, init_file: str, action: str, out_dir: str) -> None:
    dist.init_process_group(
        'gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        result = _outcome(rank, action)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f'rank{rank}.txt'), 'w') as f:
        f.write(result)


def _run(action: str):
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(
            _worker,
            args=(os.path.join(tmp, 'init'), action, tmp),
            nprocs=2,
            join=True)
        outcomes = []
        for rank in range(2):
            with open(os.path.join(tmp, f'rank{rank}.txt')) as f:
                outcomes.append(f.read())
    return outcomes


@pytest.mark.slow
def test_a_nan_term_on_one_process_stops_every_process():
    rank0, rank1 = _run('stop')
    assert rank1 == ('stop: non-finite loss term acc_logged=nan at '
                     'iteration 7')
    assert rank0 == ('stop: non-finite loss term on another process at '
                     'iteration 7')


@pytest.mark.slow
def test_a_nan_term_on_one_process_skips_on_every_process():
    assert _run('skip') == ['skip', 'skip']


def test_one_process_steps_on_finite_terms():
    """Without a process group the guard decides alone (no collective)."""
    assert _outcome(0, 'stop') == 'step'
    assert _outcome(1, 'stop').startswith('stop: non-finite loss term')
