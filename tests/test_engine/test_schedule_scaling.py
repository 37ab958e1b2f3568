"""--scale-schedule: the paper's schedule at another total batch, and the
images line every training run prints first.

Expected values are hand-computed from the paper's schedule (16 images x
90k iterations, lr 0.01, 500 warm-up iterations, steps at 60k and 80k):
at a total batch of 2 the same 1.44M images take 90k x 16 / 2 = 720k
iterations at lr 0.01 x 2 / 16 = 0.00125, warm-up 500 x 8 = 4000 and steps
at 480k and 640k. The schedulers are built by mmengine's registry as the
Runner builds them (``end`` = max_iters), not read back from our helper.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import PARAM_SCHEDULERS

from projects.focal_retina.engine.cli import (images_line, read_config,
                                              scale_schedule,
                                              schedule_reference)
from tests.conftest import ROOT

R50 = 'configs/retina_r50_fpn_1x.py'


@pytest.fixture(scope='module')
def r50_file() -> Config:
    return read_config(osp.join(ROOT, R50))


@pytest.fixture
def r50(r50_file) -> Config:
    return copy.deepcopy(r50_file)


def built_schedulers(cfg: Config) -> list:
    """The config's schedulers built as mmengine's Runner builds iteration
    schedulers: ``end`` defaults to train_cfg.max_iters."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.optim_wrapper.optimizer.lr)
    out = []
    for sched in cfg.param_scheduler:
        sched = dict(sched)
        sched.setdefault('end', cfg.train_cfg.max_iters)
        out.append(PARAM_SCHEDULERS.build(dict(sched, optimizer=optimizer)))
    return out


def test_paper_schedule_at_batch_2(r50):
    line = scale_schedule(r50, total_batch=2)
    assert r50.optim_wrapper.optimizer.lr == pytest.approx(0.00125)
    assert r50.train_cfg.max_iters == 720000
    assert r50.train_cfg.val_interval == 80000
    assert r50.default_hooks.checkpoint.interval == 80000
    assert r50.auto_scale_lr.enable is False  # no second scaling by mmengine
    warmup, steps = built_schedulers(r50)
    assert (warmup.begin, warmup.end) == (0, 4000)
    assert sorted(steps.milestones) == [480000, 640000]
    assert 'lr 0.01 -> 0.00125' in line and 'max_iters 90000 -> 720000' in line
    assert 'warm-up 4000 iterations' in line
    assert 'lr steps at 480000, 640000' in line


def test_base_batch_changes_nothing_but_the_flag(r50):
    scale_schedule(r50, total_batch=16)
    assert r50.optim_wrapper.optimizer.lr == pytest.approx(0.01)
    assert r50.train_cfg.max_iters == 90000
    warmup, steps = built_schedulers(r50)
    assert warmup.end == 500 and sorted(steps.milestones) == [60000, 80000]


def test_absolute_milestones_are_rescaled(r50):
    # mmdet's usual warm-up + MultiStepLR, counted in iterations
    r50.param_scheduler = [
        dict(
            type='LinearLR',
            start_factor=0.001,
            by_epoch=False,
            begin=0,
            end=500),
        dict(
            type='MultiStepLR',
            by_epoch=False,
            milestones=[60000, 80000],
            gamma=0.1)
    ]
    scale_schedule(r50, total_batch=32)  # 2 x the base: half the iterations
    assert r50.train_cfg.max_iters == 45000
    assert r50.param_scheduler[0].end == 250
    assert r50.param_scheduler[1].milestones == [30000, 40000]
    assert r50.optim_wrapper.optimizer.lr == pytest.approx(0.02)


def test_refuses_a_scheduler_it_cannot_rescale(r50):
    r50.param_scheduler = [
        dict(type='LinearLR', by_epoch=False, begin=0, end=500),
        dict(type='ExponentialLR', gamma=0.9999, by_epoch=False)
    ]
    with pytest.raises(
            ValueError,
            match=r'param_scheduler\[1\] '
            r'\(ExponentialLR, by_epoch=False\)'):
        scale_schedule(r50, total_batch=2)
    # nothing half-done
    assert r50.optim_wrapper.optimizer.lr == pytest.approx(0.01)
    assert r50.param_scheduler[0].end == 500
    assert r50.train_cfg.max_iters == 90000


def test_refuses_without_base_batch(r50):
    r50.auto_scale_lr = dict(enable=False)
    with pytest.raises(ValueError, match='auto_scale_lr.base_batch_size'):
        scale_schedule(r50, total_batch=2)


def test_epoch_loop_keeps_epochs_scales_lr_and_warmup(r50):
    r50.train_cfg = dict(
        type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
    r50.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    r50.param_scheduler = [
        dict(
            type='LinearLR',
            start_factor=0.001,
            by_epoch=False,
            begin=0,
            end=500),
        dict(type='MultiStepLR', by_epoch=True, milestones=[8, 11])
    ]
    line = scale_schedule(r50, total_batch=2)
    assert r50.train_cfg.max_epochs == 12 and r50.train_cfg.val_interval == 1
    assert r50.default_hooks.checkpoint.interval == 1
    assert r50.param_scheduler[0].end == 4000  # the warm-up's images kept
    assert r50.param_scheduler[1].milestones == [8, 11]
    assert r50.optim_wrapper.optimizer.lr == pytest.approx(0.00125)
    assert '12 epochs stay' in line


def test_images_line_one_gpu_auto_scale_lr(r50):
    reference = schedule_reference(r50, R50)
    r50.train_dataloader.batch_size = 2
    line = images_line(r50, world_size=1, reference=reference)
    # 2 x 90000 = 180000 images of the paper's 16 x 90000 = 1440000
    assert line.startswith('images: 2 per iteration (1 process x 2) x '
                           '90,000 iterations = 180,000;')
    assert '0.125 (1/8) of the 16 x 90,000 = 1,440,000 of ' + R50 in line
    assert '--scale-schedule' in line


def test_images_line_after_scaling_is_the_paper(r50):
    reference = schedule_reference(r50, R50)
    r50.train_dataloader.batch_size = 2
    scale_schedule(r50, total_batch=2)
    line = images_line(r50, world_size=1, reference=reference)
    assert 'x 720,000 iterations = 1,440,000; 1 of the 16 x 90,000' in line
    assert '--scale-schedule' not in line


def test_images_line_eight_processes(r50):
    line = images_line(
        r50, world_size=8, reference=schedule_reference(r50, R50))
    assert '16 per iteration (8 processes x 2)' in line
    assert '= 1,440,000; 1 of the' in line


def test_images_line_epochs(r50):
    r50.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12)
    reference = schedule_reference(r50, 'x.py')
    r50.train_cfg.max_epochs = 3
    line = images_line(
        r50, world_size=1, reference=reference, dataset_size=1000)
    assert line.startswith('images: 3 epochs x 1,000 training images = '
                           '3,000')
    assert '0.25 (1/4) of the 12 epochs of x.py' in line
