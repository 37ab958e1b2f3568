"""Schedules written as fractions of the run follow train_cfg.max_iters.

Expected values are the paper's (Sec. 4.1: 500-iteration warm-up from
lr / 3, lr / 10 at 60k and 80k of 90k) and, for other budgets, the same
fractions of the new run computed by hand.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from projects.focal_retina.engine import BudgetLinearLR, BudgetMultiStepLR
from tests.conftest import ROOT

PAPER = osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py')
DEMO = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py')


def sgd(lr=0.01):
    param = torch.nn.Parameter(torch.zeros(1, device='cpu'))
    return torch.optim.SGD([param], lr=lr)


def test_paper_schedule_at_its_own_length():
    cfg = Config.fromfile(PAPER)
    warm, steps = cfg.param_scheduler
    assert cfg.train_cfg.max_iters == 90000
    opt = sgd()
    s = BudgetMultiStepLR(
        opt, **{k: v
                for k, v in steps.items() if k != 'type'}, end=90000)
    assert sorted(s.milestones) == [60000, 80000]
    w = BudgetLinearLR(
        opt, **{k: v
                for k, v in warm.items() if k != 'type'}, end=90000)
    assert (w.begin, w.end, w.start_factor) == (0, 500, pytest.approx(1 / 3))


def test_bad_fractions_and_missing_end_are_named():
    with pytest.raises(ValueError, match='milestone_fractions'):
        BudgetMultiStepLR(sgd(), milestone_fractions=[60000], end=90000)
    with pytest.raises(ValueError, match='warmup_fraction'):
        BudgetLinearLR(sgd(), warmup_fraction=0.0, end=100)
    with pytest.raises(ValueError, match='max_iters'):
        BudgetMultiStepLR(sgd(), milestone_fractions=[0.5])


class Toy(BaseModel):

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return dict(loss=self.lin(inputs).pow(2).mean())


class RecordLR(Hook):

    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


def lr_trace(config: str, max_iters: int, tmp_path) -> list:
    """lr at every iteration of a Runner built from the config's schedule
    and optimizer, with ``train_cfg.max_iters`` changed as --cfg-options
    would (a toy model, so the schedule is all that runs)."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({'train_cfg.max_iters': max_iters})
    recorder = RecordLR()
    runner = Runner(
        model=Toy(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.ones(1))] * 4,
            sampler=dict(type='InfiniteSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=1),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=cfg.optim_wrapper.optimizer.lr)),
        param_scheduler=cfg.param_scheduler,
        train_cfg=dict(by_epoch=False, max_iters=cfg.train_cfg.max_iters),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=10**6),
            checkpoint=dict(type='CheckpointHook', interval=10**9)),
        custom_hooks=[recorder],
        experiment_name=f'sched_{osp.basename(config)}_{max_iters}')
    runner.train()
    return recorder.lrs


@pytest.mark.parametrize(
    'config,max_iters,start,warmup,milestones',
    [
        # demo: 10% warm-up from lr / 10, steps at 76% and 92%
        (DEMO, 1000, 0.1, 100, (760, 920)),
        # paper: 500 / 90000 warm-up from lr / 3, steps at 2/3 and 8/9
        (PAPER, 900, 1 / 3, 5, (600, 800)),
    ])
def test_schedule_follows_max_iters(config, max_iters, start, warmup,
                                    milestones, tmp_path):
    base_lr = Config.fromfile(config).optim_wrapper.optimizer.lr
    lrs = lr_trace(config, max_iters, tmp_path)
    assert len(lrs) == max_iters
    # the linear warm-up over T iterations, T the same fraction of the new
    # run (5 here, not 500): lr (s + (1 - s) t / (T - 1)) for t < T, as
    # mmengine's LinearLR (full lr at the last warm-up iteration)
    for t in range(warmup):
        factor = start + (1 - start) * t / (warmup - 1)
        assert lrs[t] == pytest.approx(base_lr * factor), t
    assert lrs[warmup - 2] < base_lr
    first, second = milestones
    assert lrs[warmup] == pytest.approx(base_lr)
    assert lrs[first - 1] == pytest.approx(base_lr)
    assert lrs[first] == pytest.approx(base_lr * 0.1)
    assert lrs[second - 1] == pytest.approx(base_lr * 0.1)
    assert lrs[second] == pytest.approx(base_lr * 0.01)
    assert lrs[-1] == pytest.approx(base_lr * 0.01)
