"""Generates the synthetic shapes dataset (COCO format).

    python tools/make_shapes.py [--preset dense|sparse] [--out DIR]
        [--seed 0] [--num-train N] [--img-size PX] [--min-objects N] ...

``--preset dense`` (the default) is the main job's data: 256 px images with
6-14 objects. ``--preset sparse`` is the paper's imbalance: 384 px images
with 1-4 small objects, the same classes and clutter (see SHAPES_PRESETS in
projects/focal_retina/datasets/synthetic_shapes.py). Any other option
replaces that field of the preset. The output folder defaults to
data/shapes (dense) or data/shapes_<preset>.

Reuses an existing dataset of the same parameters; the same seed and
parameters always give identical files.
"""
import argparse
import dataclasses
import os.path as osp
import sys
import time
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.logging import print_log

from projects.focal_retina.datasets import ShapesSpec, generate_shapes_dataset
from projects.focal_retina.datasets.synthetic_shapes import (SHAPES_PRESETS,
                                                             shapes_preset)
from projects.focal_retina.engine.cli import fail


def default_root(preset: str) -> str:
    """``data/shapes`` for the dense preset, ``data/shapes_<preset>``
    otherwise."""
    return 'data/shapes' if preset == 'dense' else f'data/shapes_{preset}'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--preset',
        default='dense',
        choices=sorted(SHAPES_PRESETS),
        help='named parameter set; the options below replace its fields')
    parser.add_argument(
        '--out',
        default=None,
        help='output dir (default data/shapes or data/shapes_<preset>)')
    parser.add_argument(
        '--force', action='store_true', help='replace an existing folder')
    for field in dataclasses.fields(ShapesSpec):
        parser.add_argument(
            f'--{field.name.replace("_", "-")}',
            type=int,
            default=None,
            help=f'default: the preset\'s (dense: {field.default})')
    args = parser.parse_args(argv)
    args.out = args.out or default_root(args.preset)
    return args


def spec_of(args: argparse.Namespace) -> ShapesSpec:
    """The preset's ShapesSpec with the fields given on the command line."""
    names = [f.name for f in dataclasses.fields(ShapesSpec)]
    return shapes_preset(args.preset, **{k: getattr(args, k) for k in names})


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    spec = spec_of(args)
    start = time.time()
    try:
        made = generate_shapes_dataset(args.out, spec, force=args.force)
    except (ValueError, FileExistsError) as exc:
        fail(str(exc))
    what = 'generated' if made else 'reusing'
    print_log(
        f'{what} {args.preset} shapes dataset in {args.out} '
        f'({spec.num_train} train / {spec.num_val} val images of '
        f'{spec.img_size} px, {spec.min_objects}-{spec.max_objects} '
        f'objects, {time.time() - start:.1f} s)',
        logger='current')


if __name__ == '__main__':
    main()
