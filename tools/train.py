"""Trains a detector: ``python tools/train.py CONFIG [--work-dir DIR] ...``.

The command line of mmdet's ``tools/train.py``; ``--amp`` also works on CPU
(bfloat16 autocast) and our components are registered by importing
``projects.focal_retina`` (configs also name it in ``custom_imports``).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction
from mmengine.device import get_device
from mmengine.registry import RUNNERS

from projects.focal_retina.engine.checkpoint import CheckpointUnavailableError
from projects.focal_retina.engine.cli import (add_safety_hooks,
                                              check_dataset_paths, check_file,
                                              enable_amp, fail,
                                              latest_checkpoint, load_config,
                                              set_work_dir)
from projects.focal_retina.engine.distributed import setup_cpu_distributed
from projects.focal_retina.engine.hooks import (CheckpointMismatchError,
                                                NonFiniteLossError)
from projects.focal_retina.engine.runner import FocalRetinaRunner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: float16 on CUDA, bfloat16 autocast on CPU')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by total batch / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from CHECKPOINT, or from the latest checkpoint of the '
        'work dir when no path is given')
    parser.add_argument(
        '--time-budget',
        type=float,
        metavar='SECONDS',
        help='end training after this many seconds, then validate and save '
        'as at a normal end (TrainTimeBudgetHook; the lr schedule stays the '
        "one of max_iters): compare recipes at the same wall-clock budget")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. train_cfg.max_iters=100')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    # The device mmengine's Runner will move the model to ('cuda' whenever
    # a GPU is visible; CUDA_VISIBLE_DEVICES='' selects the CPU).
    device = get_device()
    try:
        setup_cpu_distributed(cfg, args.launcher, device)
    except RuntimeError as exc:
        fail(str(exc))
    set_work_dir(cfg, args.work_dir, args.config)
    if args.amp:
        enable_amp(cfg, device)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            fail(f'--auto-scale-lr: {args.config} has no '
                 'auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        # mmengine's own search trusts last_checkpoint blindly (an empty
        # file, left by a kill while it was written, fails the resume).
        cfg.resume = True
        cfg.load_from = latest_checkpoint(cfg.work_dir)
    elif args.resume is not None:
        check_file(args.resume, '--resume checkpoint')
        cfg.resume = True
        cfg.load_from = args.resume
    add_safety_hooks(cfg)
    if args.time_budget is not None:
        if not args.time_budget > 0:
            fail(f'--time-budget {args.time_budget}: expected seconds > 0')
        cfg.custom_hooks.append(
            dict(type='TrainTimeBudgetHook', seconds=args.time_budget))
    check_dataset_paths(cfg, ('train', 'val') if cfg.get('val_cfg') else
                        ('train', ))
    runner = (
        RUNNERS.build(cfg)
        if 'runner_type' in cfg else FocalRetinaRunner.from_cfg(cfg))
    try:
        runner.train()
    except (NonFiniteLossError, CheckpointMismatchError,
            CheckpointUnavailableError) as exc:
        fail(str(exc))


if __name__ == '__main__':
    main()
