"""Prints the outcome of a training run: bbox AP, AP50, time, files.

    python tools/summarize_run.py WORK_DIR [--train-seconds S]
        [--results main_job] [--load-before "L1 L5 L15"]

``--results NAME`` also writes the figures (the COCO metrics of the last
validation, wall time, seconds per iteration from mmengine's log) to
``benchmarks/results/NAME.json`` with the machine's details; the README
quotes the main job from ``main_job.json``.
"""
import argparse
import glob
import json
import os.path as osp
import statistics
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.logging import print_log

from benchmarks import results_io
from projects.focal_retina.engine.cli import fail


def last_val_metrics(work_dir: str) -> dict:
    """The last record with COCO metrics in the run's scalars.json."""
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        fail(f'no */vis_data/scalars.json under {work_dir!r}; did the '
             'training run finish?')
    metrics = {}
    with open(files[-1]) as f:
        for line in f:
            record = json.loads(line)
            if 'coco/bbox_mAP' in record:
                metrics = record
    if not metrics:
        fail(f'{files[-1]} holds no coco/bbox_mAP: either the run did not '
             'validate, or the model output no detection above '
             'model.test_cfg.score_thr (mmdet\'s CocoMetric then logs "The '
             'testing results of the whole dataset is empty" and returns no '
             'metrics); train longer or lower the threshold')
    return metrics


def train_iterations(work_dir: str) -> dict:
    """Iterations and median seconds per iteration of the training log.

    mmengine logs ``time`` (the mean over the logging interval) with every
    training record; the median over the records leaves out the first
    iterations' start-up cost as little as the mean would include it.
    """
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    times, last = [], None
    with open(files[-1]) as f:
        for line in f:
            record = json.loads(line)
            if 'time' in record and 'loss' in record:
                times.append(record['time'])
                last = record.get('iter', last)
    return dict(
        iterations=last,
        seconds_per_iter=statistics.median(times) if times else None)


def amp_choice(work_dir: str) -> Optional[str]:
    """What ``--amp auto`` chose, from the run's log (``bf16 autocast on``
    / ``off``), or None when the run did not ask it."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    if not logs:
        return None
    with open(logs[-1], encoding='utf-8', errors='replace') as f:
        for line in f:
            if '--amp auto: ' in line:
                return line.split('--amp auto: ', 1)[1].split(':', 1)[0]
    return None


def parse_load(text: Optional[str]) -> Optional[List[float]]:
    """``--load-before``: 1, 5, 15 minute load averages (/proc/loadavg)."""
    if not text:
        return None
    try:
        return [float(x) for x in text.split()[:3]]
    except ValueError:
        fail(f'--load-before {text!r}: expected the three load averages '
             'of /proc/loadavg, e.g. "0.52 0.61 0.70"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dir')
    parser.add_argument('--train-seconds', type=int)
    parser.add_argument('--checkpoint')
    parser.add_argument('--image')
    results_io.add_argument(parser)
    parser.add_argument(
        '--load-before',
        help='load averages when training started (the contents of '
        '/proc/loadavg then), for the results file')
    args = parser.parse_args()
    load_before = parse_load(args.load_before)
    m = last_val_metrics(args.work_dir)
    lines = [
        f'bbox AP {m["coco/bbox_mAP"]:.3f}  AP50 {m["coco/bbox_mAP_50"]:.3f}'
        f'  AP75 {m["coco/bbox_mAP_75"]:.3f}'
    ]
    if args.train_seconds is not None:
        lines.append(f'training + validation wall time: '
                     f'{args.train_seconds / 60:.1f} min')
    amp = amp_choice(args.work_dir)
    if amp is not None:
        lines.append(f'--amp auto: {amp}')
    figures = len(lines)
    if args.checkpoint:
        lines.append(f'checkpoint: {args.checkpoint}')
    if args.image:
        lines.append(f'detections image: {args.image}')
    summary = 'main job summary\n  ' + '\n  '.join(lines)
    print_log(summary, logger='current')
    if args.results:
        run = train_iterations(args.work_dir)
        path = results_io.write_results(
            args.results,
            dict(
                work_dir=args.work_dir,
                coco={
                    k.split('/', 1)[1]: v
                    for k, v in m.items() if k.startswith('coco/')
                },
                train_seconds=args.train_seconds,
                train_minutes=None
                if args.train_seconds is None else args.train_seconds / 60,
                **run,
                summary=summary,
                # the figures alone (no file names), for the README
                amp_choice=amp,
                summary_figures='main job summary\n  ' +
                '\n  '.join(lines[:figures])),
            sys.argv,
            load_before=load_before)
        print_log(f'results written to {path}', logger='current')


if __name__ == '__main__':
    main()
