"""Trains a detector: ``python tools/train.py CONFIG [--work-dir DIR] ...``.

The command line of mmdet's ``tools/train.py``; ``--amp`` also works on CPU
(bfloat16 autocast; ``--amp auto`` measures whether it is faster there) and
our components are registered by importing ``projects.focal_retina``
(configs also name it in ``custom_imports``). ``--scale-schedule`` trains a
config's images at another total batch (detectron2's reference world size
rule); every run prints first how many images it will see.
``--tensorboard`` also writes the logged scalars as TensorBoard events.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.registry import RUNNERS

from projects.focal_retina.engine.amp_probe import AMP_MODES, resolve_amp
from projects.focal_retina.engine.checkpoint import CheckpointUnavailableError
from projects.focal_retina.engine.cli import (add_safety_hooks,
                                              check_dataset_paths, check_file,
                                              enable_amp, fail,
                                              from_scratch_command,
                                              images_line, latest_checkpoint,
                                              launch_world_size, load_config,
                                              scale_schedule,
                                              schedule_reference, set_work_dir)
from projects.focal_retina.engine.distributed import setup_cpu_distributed
from projects.focal_retina.engine.hooks import (CheckpointMismatchError,
                                                NonFiniteLossError)
from projects.focal_retina.engine.runner import FocalRetinaRunner

# The version checked with torch 2.13 (requirements/optional.txt).
TENSORBOARD_PIN = 'tensorboard==2.21.0'


def add_tensorboard(cfg) -> None:
    """Adds mmengine's TensorboardVisBackend to the config's visualizer:
    the scalars mmengine's LoggerHook logs (losses, lr, validation
    metrics) go to TensorBoard too, beside the json log."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        fail(f'--tensorboard needs the tensorboard package: pip install '
             f'{TENSORBOARD_PIN}')
    visualizer = cfg.get('visualizer') or dict(
        type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
    backends = list(visualizer.get('vis_backends') or [])
    if not any(b.get('type') == 'TensorboardVisBackend' for b in backends):
        backends.append(dict(type='TensorboardVisBackend'))
    visualizer['vis_backends'] = backends
    cfg.visualizer = visualizer


def amp_argv(argv: List[str]) -> List[str]:
    """A bare ``--amp`` (not followed by on/off/auto) becomes ``--amp=on``,
    so that it keeps its old meaning wherever it stands, also before the
    config (argparse would take the config for its value)."""
    return [
        '--amp=on' if arg == '--amp' and
        (i + 1 == len(argv) or argv[i + 1] not in AMP_MODES) else arg
        for i, arg in enumerate(argv)
    ]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument(
        '--amp',
        choices=AMP_MODES,
        default='off',
        metavar='{on,off,auto}',
        help='mixed precision (bare --amp: on): float16 on CUDA, bfloat16 '
        'autocast on the CPU; auto: float16 on CUDA, and on the CPU bf16 only '
        'if a probe of the model (a few seconds, cached per machine) finds it '
        'faster, which needs AMX rather than AVX-512 BF16 alone')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by total batch / auto_scale_lr.base_batch_size '
        '(iterations stay: a smaller batch sees fewer images)')
    parser.add_argument(
        '--scale-schedule',
        action='store_true',
        help='train the images of the config at the real total batch B: lr '
        'x B / auto_scale_lr.base_batch_size, max_iters, val and checkpoint '
        'intervals and iteration-counted scheduler milestones x base / B '
        '(detectron2\'s REFERENCE_WORLD_SIZE rule); epoch loops keep their '
        'epochs')
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
        'as at a normal end, in an iteration- or epoch-based loop; rank 0 '
        'decides for every process (TrainTimeBudgetHook; the lr schedule '
        'stays the configured one): compare recipes at the same wall-clock '
        'budget')
    parser.add_argument(
        '--tensorboard',
        action='store_true',
        help='also write the losses, lr and validation metrics as '
        'TensorBoard events (mmengine\'s TensorboardVisBackend, in '
        'WORK_DIR/TIMESTAMP/vis_data/: tensorboard --logdir WORK_DIR); needs '
        f'pip install {TENSORBOARD_PIN}')
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
    args = parser.parse_args(amp_argv(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    reference = []
    cfg = load_config(
        args.config, args.cfg_options,
        lambda c: reference.append(schedule_reference(c, args.config)))
    cfg.launcher = args.launcher
    # The device mmengine's Runner will move the model to ('cuda' whenever
    # a GPU is visible; CUDA_VISIBLE_DEVICES='' selects the CPU).
    device = get_device()
    try:
        setup_cpu_distributed(cfg, args.launcher, device)
    except RuntimeError as exc:
        fail(str(exc))
    set_work_dir(cfg, args.work_dir, args.config)
    world_size = launch_world_size(args.launcher)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            fail(f'--auto-scale-lr: {args.config} has no '
                 'auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    scaled = None
    if args.scale_schedule:  # scales the lr itself (no double scaling)
        try:
            scaled = scale_schedule(
                cfg, world_size * cfg.train_dataloader.batch_size)
        except ValueError as exc:
            fail(f'--scale-schedule: {args.config}: {exc}')
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
    if args.tensorboard:
        add_tensorboard(cfg)
    if args.time_budget is not None:
        if not args.time_budget > 0:
            fail(f'--time-budget {args.time_budget}: expected seconds > 0')
        cfg.custom_hooks.append(
            dict(type='TrainTimeBudgetHook', seconds=args.time_budget))
    check_dataset_paths(cfg, ('train', 'val') if cfg.get('val_cfg') else
                        ('train', ))
    # after the data check: a missing dataset fails before the probe runs
    use_amp, amp_line = resolve_amp(args.amp, cfg.model, device)
    if use_amp:
        enable_amp(cfg, device)
    runner = (
        RUNNERS.build(cfg)
        if 'runner_type' in cfg else FocalRetinaRunner.from_cfg(cfg))
    # An epoch's images are the dataset's: known once the loop is built
    # (runner.train() builds it first thing too).
    dataset_size = (None if 'max_iters' in cfg.train_cfg else len(
        runner.train_dataloader.dataset))
    images = images_line(cfg, world_size, reference[0], dataset_size)
    if args.time_budget is not None:
        images += '; at most: --time-budget may end it sooner'
    for line in (amp_line, scaled, images):  # into the run's log, too
        if line:
            print_log(line, logger='current')
    try:
        runner.train()
    except (NonFiniteLossError, CheckpointMismatchError) as exc:
        fail(str(exc))
    except CheckpointUnavailableError as exc:
        # A config of tools/make_config.py: the same one without weights.
        scratch = from_scratch_command(args.config, cfg)
        fail(str(exc) + (f'; or write this config from scratch: {scratch}'
                         if scratch else ''))


if __name__ == '__main__':
    main()
