"""A toy training run with TrainTimeBudgetHook, for test_time_budget.py.

:func:`build_runner` is used in the test's own process; run as a script
under torchrun (2 gloo processes, ``PYTHONPATH`` = the repository root) it
trains an iteration-based and then an epoch-based run, each budget read on
a fake clock that advances ``TICKS[rank]`` seconds per reading, so that the
ranks disagree about the time, and writes what each rank saw to
``OUT_DIR/rank<R>.json``::

    torchrun --nproc_per_node 2 time_budget_worker.py OUT_DIR
"""
import itertools
import json
import os
import os.path as osp
import sys
from datetime import timedelta
from typing import List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel

from projects.focal_retina.engine import time_budget
from projects.focal_retina.engine.distributed import setup_cpu_distributed
from projects.focal_retina.engine.runner import FocalRetinaRunner

# 20 samples in batches of 2: 10 iterations per epoch (per process).
DATA = [dict(inputs=torch.tensor([1.0, float(i)])) for i in range(20)]
RUNS = itertools.count()  # a fresh experiment (message hub) per Runner
TICKS = (1, 100)  # seconds per clock reading: rank 0, rank 1
BUDGET = 3.5  # on rank 0's clock: iterations 1..4 run, then the run ends


class Toy(BaseModel):
    """One linear layer; counts its training steps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(2, 1)
        self.steps = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.fc(inputs.to('cpu'))
        if mode == 'loss':
            self.steps += 1
            return dict(loss=out.pow(2).mean())
        return out


class CountImages(BaseMetric):
    """The number of validation images (a metric with nothing to learn)."""

    def process(self, data_batch, data_samples) -> None:
        self.results.extend([1] * len(data_samples))

    def compute_metrics(self, results: list) -> dict:
        return dict(images=float(sum(results)))


class Record(Hook):
    """What happened: validations, and the (epoch, iter) of each save."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.validations = 0
        self.saves: List[List[int]] = []

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.validations += 1

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint['meta']
        self.saves.append([meta['epoch'], meta['iter']])


def build_runner(work_dir: str,
                 by_epoch: bool,
                 seconds: float,
                 max_epochs: int = 3,
                 max_iters: int = 30,
                 launcher: str = 'none',
                 cfg: Optional[Config] = None,
                 name: Optional[str] = None) -> FocalRetinaRunner:
    """A Runner on :class:`Toy` with a budget, validation whose interval is
    never reached (only the end of the run validates) and a checkpoint hook
    whose interval is never reached (only the last save happens)."""
    if by_epoch:
        train_cfg = dict(
            by_epoch=True, max_epochs=max_epochs, val_interval=100)
        sampler = 'DefaultSampler'
    else:
        train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=100)
        sampler = 'InfiniteSampler'
    record = Record()
    runner = FocalRetinaRunner(
        model=Toy(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=DATA,
            sampler=dict(type=sampler, shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2),
        val_dataloader=dict(
            dataset=DATA[:4],
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2),
        val_cfg=dict(),
        val_evaluator=Evaluator(CountImages()),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=train_cfg,
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=10**6),
            checkpoint=dict(
                type='CheckpointHook', interval=100, by_epoch=by_epoch)),
        custom_hooks=[time_budget.TrainTimeBudgetHook(seconds), record],
        launcher=launcher,
        env_cfg=(cfg or Config()).get('env_cfg', dict()),
        cfg=cfg,
        experiment_name=name or f'time_budget_{next(RUNS)}')
    runner.record = record  # type: ignore[attr-defined]
    return runner


def fake_clock(seconds_per_reading: float) -> None:
    """Makes the hook's clock read 0, then one step more per reading."""
    ticks = itertools.count(0, seconds_per_reading)
    time_budget._now = lambda: next(ticks)


def main() -> None:
    out = sys.argv[1]
    rank = int(os.environ['RANK'])
    # A short timeout: ranks that disagree fail in a minute, not in 30.
    dist.init_process_group(
        backend='gloo',
        rank=rank,
        world_size=int(os.environ['WORLD_SIZE']),
        timeout=timedelta(seconds=60))
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='gloo'))))
    setup_cpu_distributed(cfg, 'pytorch', device='cpu')
    seen = {}
    for by_epoch in (False, True):
        mode = 'epoch' if by_epoch else 'iter'
        fake_clock(TICKS[rank])
        runner = build_runner(
            osp.join(out, mode),
            by_epoch,
            BUDGET,
            launcher='pytorch',
            cfg=cfg,
            name=f'time_budget_{mode}')
        runner.train()
        seen[mode] = dict(
            iter=runner.iter,
            epoch=runner.epoch,
            steps=runner.model.module.steps,
            validations=runner.record.validations,
            saves=runner.record.saves)
    with open(osp.join(out, f'rank{rank}.json'), 'w') as f:
        json.dump(seen, f)
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
