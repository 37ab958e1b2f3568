"""TrainTimeBudgetHook ends a run when its time is up, then validates and
writes the last checkpoint once, as at a normal end; mmengine's Runner on a
toy model, with a fake clock (one second per reading: 0 at the start, then
one reading after each iteration but the last one of the run)."""
import itertools
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from torch.utils.data import DataLoader

from projects.focal_retina.engine import time_budget
from tests.conftest import ROOT, free_port
from tests.test_engine import time_budget_worker as worker
from tests.test_engine.test_hooks import Toy, make_runner


@pytest.fixture
def clock(monkeypatch):
    ticks = itertools.count()  # 0 at before_train, then 1, 2, ... per call
    monkeypatch.setattr(time_budget, '_now', lambda: next(ticks))


def checkpoints(work_dir) -> list:
    return sorted(p for p in os.listdir(work_dir) if p.endswith('.pth'))


def test_run_ends_when_the_budget_is_spent(tmp_path, clock):
    runner = make_runner(
        tmp_path,
        Toy(),
        max_iters=10,
        interval=100,
        custom_hooks=[dict(type='TrainTimeBudgetHook', seconds=3.5)])
    runner.train()
    # 1 s per iteration: iterations 1..4 run (4 s >= 3.5 s), 5..10 do not.
    assert runner.iter == 4
    assert checkpoints(tmp_path) == ['iter_4.pth']


def test_iter_based_run_validates_and_saves_once(tmp_path, clock):
    runner = worker.build_runner(str(tmp_path), by_epoch=False, seconds=3.5)
    runner.train()
    assert runner.iter == 4 and runner.model.steps == 4
    assert runner.record.validations == 1
    assert runner.record.saves == [[0, 4]]  # [epoch, iter] of each save
    assert checkpoints(tmp_path) == ['iter_4.pth']


# 3 epochs of 10 iterations: the budget ends epoch 1 in its middle or at
# its last iteration, or epoch 2 after its third iteration.
@pytest.mark.parametrize('seconds, iters, epochs', [(3.5, 4, 1), (9.5, 10, 1),
                                                    (12.5, 13, 2)])
def test_epoch_based_run_ends_too(tmp_path, clock, seconds, iters, epochs):
    runner = worker.build_runner(
        str(tmp_path), by_epoch=True, seconds=seconds, max_epochs=3)
    runner.train()
    # The epoch in progress ended after `iters` steps (no further batch was
    # trained on) and was the last one: validated and saved once.
    assert runner.model.steps == iters
    assert (runner.iter, runner.epoch) == (iters, epochs)
    assert runner.record.validations == 1
    assert runner.record.saves == [[epochs, iters]]
    assert checkpoints(tmp_path) == [f'epoch_{epochs}.pth']
    # The dataloader is an ordinary one again.
    assert type(runner.train_dataloader) is DataLoader


@pytest.mark.parametrize('by_epoch', [False, True])
def test_budget_longer_than_the_run_changes_nothing(tmp_path, clock, by_epoch):
    runner = worker.build_runner(
        str(tmp_path), by_epoch, seconds=100, max_epochs=2, max_iters=20)
    runner.train()
    assert (runner.iter, runner.model.steps) == (20, 20)
    assert runner.record.validations == 1
    assert checkpoints(tmp_path) == (['epoch_2.pth']
                                     if by_epoch else ['iter_20.pth'])


def test_other_loops_are_refused():
    hook = time_budget.TrainTimeBudgetHook(10)
    runner = SimpleNamespace(train_loop=object())
    with pytest.raises(
            TypeError,
            match='EpochBasedTrainLoop or an '
            'IterBasedTrainLoop; train_cfg builds object'):
        hook.before_train(runner)


@pytest.mark.parametrize('seconds', [0, -1])
def test_budget_must_be_positive(seconds):
    with pytest.raises(ValueError, match='seconds'):
        time_budget.TrainTimeBudgetHook(seconds)


@pytest.mark.slow
def test_ranks_stop_together(tmp_path):
    """2 gloo processes whose clocks disagree (rank 1's says the budget is
    spent after the first iteration, rank 0's after the fourth): rank 0
    decides, both stop after iteration 4, validate once and save once."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')
    }
    env.update(OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', PYTHONPATH=ROOT)
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        f'--master_port={free_port()}', worker.__file__,
        str(tmp_path)
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    seen = []
    for rank in (0, 1):
        with open(tmp_path / f'rank{rank}.json') as f:
            seen.append(json.load(f))
    keys = ('iter', 'epoch', 'steps', 'validations')
    for rank in seen:
        assert {
            k: rank['iter'][k]
            for k in keys
        } == dict(
            iter=4, epoch=0, steps=4, validations=1)
        assert {
            k: rank['epoch'][k]
            for k in keys
        } == dict(
            iter=4, epoch=1, steps=4, validations=1)
    # Checkpoints are written by rank 0 only.
    assert seen[0]['iter']['saves'] == [[0, 4]]
    assert seen[0]['epoch']['saves'] == [[1, 4]]
    assert checkpoints(tmp_path / 'iter') == ['iter_4.pth']
    assert checkpoints(tmp_path / 'epoch') == ['epoch_1.pth']
