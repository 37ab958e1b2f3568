"""TrainTimeBudgetHook ends a run when its time is up, with the last
checkpoint written as at a normal end; mmengine's Runner on a toy model,
with a fake clock (one second per iteration)."""
import itertools
import os

import pytest

from projects.focal_retina.engine import time_budget
from tests.test_engine.test_hooks import Toy, make_runner


@pytest.fixture
def clock(monkeypatch):
    ticks = itertools.count()  # 0 at before_train, then 1, 2, ... per call
    monkeypatch.setattr(time_budget, '_now', lambda: next(ticks))


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
    assert sorted(p for p in os.listdir(tmp_path)
                  if p.endswith('.pth')) == ['iter_4.pth']


def test_budget_longer_than_the_run_changes_nothing(tmp_path, clock):
    runner = make_runner(
        tmp_path,
        Toy(),
        max_iters=3,
        interval=100,
        custom_hooks=[dict(type='TrainTimeBudgetHook', seconds=100)])
    runner.train()
    assert runner.iter == 3


@pytest.mark.parametrize('seconds', [0, -1])
def test_budget_must_be_positive(seconds):
    with pytest.raises(ValueError, match='seconds'):
        time_budget.TrainTimeBudgetHook(seconds)
