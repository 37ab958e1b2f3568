"""Generates the synthetic dense-shapes dataset (COCO format).

    python tools/make_shapes.py --out data/shapes [--seed 0] [--num-train N]

Reuses an existing dataset of the same parameters; the same seed and
parameters always give identical files.
"""
import argparse
import dataclasses
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.logging import print_log

from projects.focal_retina.datasets import ShapesSpec, generate_shapes_dataset
from projects.focal_retina.engine.cli import fail


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/shapes', help='output dir')
    parser.add_argument(
        '--force', action='store_true', help='replace an existing folder')
    for field in dataclasses.fields(ShapesSpec):
        parser.add_argument(
            f'--{field.name.replace("_", "-")}',
            type=int,
            default=field.default)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    names = [f.name for f in dataclasses.fields(ShapesSpec)]
    spec = ShapesSpec(**{k: getattr(args, k) for k in names})
    start = time.time()
    try:
        made = generate_shapes_dataset(args.out, spec, force=args.force)
    except (ValueError, FileExistsError) as exc:
        fail(str(exc))
    what = 'generated' if made else 'reusing'
    print_log(
        f'{what} shapes dataset in {args.out} '
        f'({spec.num_train} train / {spec.num_val} val images, '
        f'{time.time() - start:.1f} s)',
        logger='current')


if __name__ == '__main__':
    main()
