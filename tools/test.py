"""Evaluates a checkpoint: ``python tools/test.py CONFIG CHECKPOINT``.

The command line of mmdet's ``tools/test.py``; prints the metrics of the
config's ``test_evaluator`` (CocoMetric: the COCO AP table). With
``--test-dev NAME`` it writes a validated COCO test-dev submission instead;
with ``--plots DIR``, per-class precision-recall curves and a confusion
matrix of the evaluated set (PlotsHook, ``evaluation/plots.py``).
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction
from mmengine.device import get_device
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from projects.focal_retina.engine.checkpoint import CheckpointUnavailableError
from projects.focal_retina.engine.cli import (add_safety_hooks,
                                              check_checkpoint,
                                              check_dataset_paths, fail,
                                              load_config, set_work_dir)
from projects.focal_retina.engine.distributed import setup_cpu_distributed
from projects.focal_retina.engine.hooks import CheckpointMismatchError
from projects.focal_retina.evaluation.testdev import submission_name_problem


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save the metrics')
    parser.add_argument(
        '--out', help='dump the predictions to a pickle file (.pkl)')
    parser.add_argument(
        '--show-dir',
        help='draw predictions into this folder of the work '
        'dir (one image per test image)')
    parser.add_argument(
        '--test-dev',
        metavar='NAME',
        help='run on COCO test-dev (annotations/image_info_test-dev2017.json'
        ' and test2017/ under the test dataset root) and write '
        'detections_test-dev2017_NAME_results.json and its zip into the work '
        'dir, validated for the evaluation server')
    parser.add_argument(
        '--plots',
        metavar='DIR',
        help='also write per-class precision-recall curves (pr_curves.png, '
        '.csv) and a confusion matrix with a background row and column '
        '(confusion_matrix.png, .json; score >= 0.3, IoU >= 0.5) of the '
        'evaluated set into DIR, from the predictions just scored')
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='fold BatchNorm into the preceding convs after loading the '
        'checkpoint (the same function, faster on the CPU)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. test_evaluator.classwise=True')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def use_test_dev(cfg, name: str) -> None:
    """Points the test loop at COCO test-dev and writes a submission."""
    problem = submission_name_problem(name)
    if problem:
        fail(problem)
    dataset = cfg.test_dataloader.dataset
    info = 'annotations/image_info_test-dev2017.json'
    info_path = osp.join(dataset.get('data_root') or '', info)
    if not osp.isfile(info_path):
        fail(f'--test-dev: {info_path!r} does not exist; expected the COCO '
             'test-dev image info under test_dataloader.dataset.data_root')
    dataset.update(
        ann_file=info, data_prefix=dict(img='test2017/'), test_mode=True)
    cfg.test_evaluator = dict(
        type='CocoTestDevSubmission',
        ann_file=info_path,
        out_dir=cfg.work_dir,
        name=name)


def use_plots(cfg, out_dir: str, test_dev: bool) -> None:
    """Adds the test run's plots (PlotsHook) to ``cfg``."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        fail(f'--plots {out_dir!r} is a file; expected a folder (created '
             'if missing)')
    if test_dev:
        fail('--plots needs ground truth, which --test-dev has not')
    evaluators = cfg.test_evaluator
    for evaluator in ([evaluators]
                      if isinstance(evaluators, dict) else evaluators):
        # ZeroIfEmptyCocoMetric is mmdet's CocoMetric (same arguments and
        # AP) that can keep its COCOeval for the curves.
        if evaluator.get('type') in ('CocoMetric', 'mmdet.CocoMetric'):
            evaluator['type'] = 'ZeroIfEmptyCocoMetric'
        if evaluator.get('type') == 'ZeroIfEmptyCocoMetric':
            break
    else:
        fail('--plots needs a COCO metric (CocoMetric or '
             'ZeroIfEmptyCocoMetric) in test_evaluator')
    hooks = list(cfg.get('custom_hooks') or [])
    hook = next((h for h in hooks if h.get('type') == 'PlotsHook'), None)
    if hook is None:
        hook = dict(type='PlotsHook', after_train=False)
        hooks.append(hook)
    hook['test_out_dir'] = osp.abspath(out_dir)
    cfg.custom_hooks = hooks  # (mmengine's Config stores a copy)


def main() -> None:
    args = parse_args()
    check_checkpoint(args.checkpoint)
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
    cfg.load_from = args.checkpoint
    if args.test_dev:
        use_test_dev(cfg, args.test_dev)
    check_dataset_paths(cfg, ('test', ))
    if args.plots:
        use_plots(cfg, args.plots, bool(args.test_dev))
    if args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            fail('--show-dir needs default_hooks.visualization in the config')
        hook.draw = True
        hook.test_out_dir = args.show_dir
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            fail(f'--out {args.out!r}: expected a .pkl or .pickle file')
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(
            cfg.test_evaluator, dict) else list(cfg.test_evaluator)
        cfg.test_evaluator.append(
            dict(type='DumpDetResults', out_file_path=args.out))
    # A checkpoint that does not fit the config (mmengine would load what
    # matches, warn, and evaluate the rest at random) is refused in one line.
    add_safety_hooks(cfg, ('CheckpointCompatibilityHook', ))
    if args.fuse_conv_bn:  # FuseConvBNHook: after the checkpoint is loaded
        cfg.custom_hooks = list(cfg.get('custom_hooks')
                                or []) + [dict(type='FuseConvBNHook')]
    runner = (
        RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg))
    try:
        runner.test()
    except (CheckpointUnavailableError, CheckpointMismatchError) as exc:
        fail(str(exc))


if __name__ == '__main__':
    main()
