"""Runs a trained detector on images, lists and draws its detections.

    python tools/infer.py CONFIG CHECKPOINT IMG [IMG ...] [--score-thr 0.5]
        [--out-dir DIR] [--grid detections.png]

Built on mmdet's DetInferencer: every image with its boxes drawn goes to
``DIR/vis/``, its predictions to ``DIR/preds/``; ``--grid`` also tiles the
drawn images into one picture.
"""
import argparse
import math
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import cv2
import numpy as np
from mmengine.logging import print_log

from projects.focal_retina.engine.cli import check_file, fail, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('inputs', nargs='+', help='image files or folders')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.5,
        help='keep detections scoring at least this')
    parser.add_argument(
        '--out-dir',
        default='outputs',
        help='where drawn images and predictions go')
    parser.add_argument(
        '--grid',
        help='also write the drawn images tiled '
        'into this one image file')
    parser.add_argument(
        '--device',
        default=None,
        help="e.g. 'cpu' or 'cuda:0' (default: best)")
    return parser.parse_args()


def tile(images: list, cols: int) -> np.ndarray:
    """Tiles RGB images of any sizes into a grid, padding with white."""
    h = max(img.shape[0] for img in images)
    w = max(img.shape[1] for img in images)
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h:r * h + img.shape[0], c * w:c * w + img.shape[1]] = img
    return grid


def main() -> None:
    args = parse_args()
    check_file(args.checkpoint, 'checkpoint')
    for path in args.inputs:
        if not osp.exists(path):
            fail(f'input {path!r} does not exist')
    if not 0 <= args.score_thr <= 1:
        fail(f'--score-thr {args.score_thr}: expected a value in [0, 1]')
    cfg = load_config(args.config)
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(
        model=cfg,
        weights=args.checkpoint,
        device=args.device,
        show_progress=False)
    classes = inferencer.model.dataset_meta['classes']
    inputs = [
        osp.join(p, f) for p in args.inputs if osp.isdir(p)
        for f in sorted(os.listdir(p))
    ] + [p for p in args.inputs if not osp.isdir(p)]
    result = inferencer(
        inputs,
        out_dir=args.out_dir,
        pred_score_thr=args.score_thr,
        no_save_pred=False,
        return_vis=args.grid is not None)
    for path, pred in zip(inputs, result['predictions']):
        kept = [(s, lab, box) for s, lab, box in zip(
            pred['scores'], pred['labels'], pred['bboxes'])
                if s >= args.score_thr]
        print_log(
            f'{path}: {len(kept)} detections >= {args.score_thr}',
            logger='current')
        for score, label, box in kept:
            print_log(
                f'  {classes[label]:<12} {score:.3f}  '
                f'[{", ".join(f"{v:.1f}" for v in box)}]',
                logger='current')
    if args.grid:
        grid = tile(result['visualization'], cols=min(len(inputs), 2))
        os.makedirs(osp.dirname(osp.abspath(args.grid)), exist_ok=True)
        cv2.imwrite(args.grid, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print_log(f'detections drawn into {args.grid}', logger='current')


if __name__ == '__main__':
    main()
