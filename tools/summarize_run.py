"""Prints the outcome of a training run: bbox AP, AP50, time, files.

    python tools/summarize_run.py WORK_DIR [--train-seconds S]
"""
import argparse
import glob
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.logging import print_log

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dir')
    parser.add_argument('--train-seconds', type=int)
    parser.add_argument('--checkpoint')
    parser.add_argument('--image')
    args = parser.parse_args()
    m = last_val_metrics(args.work_dir)
    lines = [
        f'bbox AP {m["coco/bbox_mAP"]:.3f}  AP50 {m["coco/bbox_mAP_50"]:.3f}'
        f'  AP75 {m["coco/bbox_mAP_75"]:.3f}'
    ]
    if args.train_seconds is not None:
        lines.append(f'training + validation wall time: '
                     f'{args.train_seconds / 60:.1f} min')
    if args.checkpoint:
        lines.append(f'checkpoint: {args.checkpoint}')
    if args.image:
        lines.append(f'detections image: {args.image}')
    print_log('main job summary\n  ' + '\n  '.join(lines), logger='current')


if __name__ == '__main__':
    main()
