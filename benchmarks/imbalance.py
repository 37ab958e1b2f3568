"""Foreground-background imbalance at the model's input: anchors per image,
positive anchors per image and their ratio, beside the paper's COCO scale.

For a dataset and a detector config, each image's boxes are resized as the
config's training ``Resize`` resizes them (keep_ratio), the input is padded
as its data preprocessor pads it, the anchors of every pyramid level are
those of the config's anchor generator on the feature maps of that padded
input, and they are assigned by the config's assigner (RetinaNet: IoU >= .5
positive, < .4 negative, between ignored; each box's best anchors positive
too). Negatives per positive is the sum of negative anchors over the sum of
positive anchors over all images.

COCO: the anchor counts are computed in the same way for 4:3 images (COCO's
commonest shape, 640 x 480) at the paper's scales, with the paper's
anchors (4x the stride). The paper gives no count of positive anchors per
image (only "~100k locations" per image, Sec. 1), so COCO's positives are
reported as not known.

    python benchmarks/imbalance.py [--data dense sparse] [--results NAME]

measures the shapes presets' training splits (made by
``tools/make_shapes.py`` when missing) with their demo configs and prints
the table (``benchmarks/mini_table1.py`` measures its in-memory training
data with :func:`measure_boxes`).
"""
import argparse
import json
import math
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

# (label, input height, width) of the paper's scales for a 4:3 image
COCO_SCALES = (('COCO, 600 px (the ablations)', 600, 800),
               ('COCO, 800 px (Table 2)', 800, 1067))
STRIDES = (8, 16, 32, 64, 128)  # P3-P7
ANCHORS_PER_LOCATION = 9  # 3 scales x 3 ratios


def level_sizes(height: int,
                width: int,
                pad_divisor: int = 32,
                strides: Sequence[int] = STRIDES) -> List[Tuple[int, int]]:
    """Feature-map sizes of P3-P7 for an input of ``height x width``.

    The input is padded to a multiple of ``pad_divisor``; C3-C5 (hence
    P3-P5) are the padded size over their stride; P6 and P7 are 3x3 stride-2
    convolutions with padding 1, which map n to ceil(n / 2).
    """
    ph = math.ceil(height / pad_divisor) * pad_divisor
    pw = math.ceil(width / pad_divisor) * pad_divisor
    sizes = []
    for stride in strides:
        if stride <= pad_divisor:
            sizes.append((ph // stride, pw // stride))
        else:
            h, w = sizes[-1]
            sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


def anchors_per_image(height: int,
                      width: int,
                      pad_divisor: int = 32,
                      per_location: int = ANCHORS_PER_LOCATION) -> int:
    """Number of anchors of an input of ``height x width`` (all levels)."""
    return per_location * sum(
        h * w for h, w in level_sizes(height, width, pad_divisor))


def _train_resize_scale(cfg) -> Optional[Tuple[int, int]]:
    """The ``scale`` of the training pipeline's Resize (None: no Resize,
    or no training dataloader in ``cfg``)."""
    if 'train_dataloader' not in cfg:
        return None
    pipeline = cfg.train_dataloader.dataset.get('pipeline', [])
    for step in pipeline:
        if step.get('type') == 'Resize':
            return tuple(step['scale'])
    return None


def _resized(width: int, height: int, scale: Optional[Tuple[int,
                                                            int]]) -> float:
    """mmcv's keep-ratio rescale factor of a ``width x height`` image."""
    if scale is None:
        return 1.0
    long_edge, short_edge = max(scale), min(scale)
    return min(long_edge / max(width, height), short_edge / min(width, height))


def measure(config,
            data_root: str,
            split: str = 'train',
            max_images: Optional[int] = None) -> Dict:
    """Anchors, positive, ignored and negative anchors per image of a COCO
    dataset as the model of ``config`` sees it in training.

    Args:
        config: Detector config, a path or an mmengine ``Config`` (its
            anchor generator, assigner, training Resize and data
            preprocessor's padding are used).
        data_root: Dataset root with ``annotations/{split}.json``.
        split: Which annotation file.
        max_images: Only the first images (None: all).

    Returns:
        See :func:`measure_boxes`.
    """
    with open(osp.join(data_root, 'annotations', f'{split}.json')) as f:
        coco = json.load(f)
    boxes: Dict[int, List[List[float]]] = {}
    labels: Dict[int, List[int]] = {}
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        boxes.setdefault(ann['image_id'], []).append([x, y, x + w, y + h])
        labels.setdefault(ann['image_id'], []).append(ann['category_id'] - 1)
    images = [
        dict(
            height=info['height'],
            width=info['width'],
            boxes=boxes.get(info['id'], []),
            labels=labels.get(info['id'], []))
        for info in coco['images'][:max_images]
    ]
    return measure_boxes(config, images)


def measure_boxes(config, images: Sequence[Dict]) -> Dict:
    """Anchors, positive, ignored and negative anchors per image of
    ``images`` as the model of ``config`` sees them in training.

    Args:
        config: Detector config, a path or an mmengine ``Config``.
        images: Dicts with ``height``, ``width`` (the image before the
            training Resize), ``boxes`` (x0, y0, x1, y1 in pixels of that
            image) and ``labels`` (0-based); e.g. data made in memory.

    Returns:
        A dict: ``images``, ``input`` (``'HxW'`` of the first image at the
        model's input), ``objects``, ``anchors``, ``positives``, ``ignored``
        and ``negatives`` per image (means), ``positives_min`` /
        ``positives_max`` over images and ``neg_per_pos`` (negatives over
        positives, summed over all images).
    """
    import torch
    from mmdet.registry import TASK_UTILS
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData

    import projects.focal_retina  # noqa: F401  (registers components)
    from projects.focal_retina.engine.cli import read_config
    register_all_modules(init_default_scope=False)
    cfg = read_config(config) if isinstance(config, str) else config
    head = cfg.model.bbox_head
    generator = TASK_UTILS.build(head.anchor_generator)
    assigner = TASK_UTILS.build(cfg.model.train_cfg.assigner)
    pad = cfg.model.data_preprocessor.get('pad_size_divisor', 1) or 1
    scale = _train_resize_scale(cfg)
    totals = dict(objects=0, anchors=0, positives=0, ignored=0, negatives=0)
    per_image_pos = []
    first_input = None
    for info in images:
        factor = _resized(info['width'], info['height'], scale)
        height = int(info['height'] * factor + 0.5)
        width = int(info['width'] * factor + 0.5)
        first_input = first_input or f'{height}x{width}'
        padded = (math.ceil(height / pad) * pad, math.ceil(width / pad) * pad)
        sizes = level_sizes(height, width, pad,
                            [int(s[0]) for s in generator.strides])
        anchors = torch.cat(generator.grid_priors(sizes, device='cpu'))
        valid = torch.cat(generator.valid_flags(sizes, padded, device='cpu'))
        anchors = anchors[valid]
        gt = InstanceData(
            bboxes=torch.as_tensor(info['boxes'], dtype=torch.float32).reshape(
                -1, 4) * factor,
            labels=torch.as_tensor(info['labels'], dtype=torch.long))
        result = assigner.assign(InstanceData(priors=anchors), gt)
        pos = int((result.gt_inds > 0).sum())
        per_image_pos.append(pos)
        totals['objects'] += len(gt)
        totals['anchors'] += len(anchors)
        totals['positives'] += pos
        totals['ignored'] += int((result.gt_inds < 0).sum())
        totals['negatives'] += int((result.gt_inds == 0).sum())
    n = max(len(images), 1)
    out = {k: v / n for k, v in totals.items()}
    out.update(
        images=len(images),
        input=first_input,
        positives_min=min(per_image_pos, default=0),
        positives_max=max(per_image_pos, default=0),
        neg_per_pos=(totals['negatives'] /
                     totals['positives'] if totals['positives'] else None))
    return out


def coco_rows() -> List[Dict]:
    """The paper's scale: anchors of a 4:3 COCO image at 600 and 800 px
    (mmdet's padding to 32); positives not known."""
    return [
        dict(
            name=label,
            input=f'{h}x{w}',
            anchors=anchors_per_image(h, w),
            objects=None,
            positives=None,
            note='positives per image not given in the paper')
        for label, h, w in COCO_SCALES
    ]


def table(measured: Dict[str, Dict]) -> str:
    """Markdown table of measured datasets and the COCO rows."""
    lines = [
        '| data | input (H x W) | objects / img | anchors / img | '
        'positive anchors / img (min-max) | ignored / img | '
        'negatives : positives |', '|---|---|---|---|---|---|---|'
    ]
    for name, m in measured.items():
        ratio = 'n/a' if m['neg_per_pos'] is None else \
            f'{m["neg_per_pos"]:,.0f} : 1'
        lines.append(f'| {name} ({m["images"]} images) | {m["input"]} | '
                     f'{m["objects"]:.1f} | {m["anchors"]:,.0f} | '
                     f'{m["positives"]:.1f} ({m["positives_min"]}-'
                     f'{m["positives_max"]}) | {m["ignored"]:.1f} | {ratio} |')
    for row in coco_rows():
        lines.append(f'| {row["name"]} | {row["input"]} | n/a | '
                     f'{row["anchors"]:,} | not known ({row["note"]}) | '
                     'not known | not known |')
    lines.append('')
    lines.append('The paper: "~100k locations" per image (Sec. 1); COCO rows '
                 'computed for a 4:3 image with 9 anchors per location on '
                 'P3-P7, input padded to 32.')
    return '\n'.join(lines)


# preset: (config, data folder) of the shapes presets on disk
PRESETS = {
    'dense': ('configs/demo/retina_r18_fpn_shapes.py', 'data/shapes'),
    'sparse':
    ('configs/demo/retina_r18_fpn_shapes_sparse.py', 'data/shapes_sparse'),
}


def main(argv: Optional[Sequence[str]] = None) -> None:
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import results_io
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--data',
        nargs='+',
        choices=sorted(PRESETS),
        default=['sparse', 'dense'],
        help='shapes presets to measure (made when missing)')
    parser.add_argument('--max-images', type=int, help='first N only')
    results_io.add_argument(parser)
    args = parser.parse_args(argv)
    from projects.focal_retina.datasets import generate_shapes_dataset
    from projects.focal_retina.datasets.synthetic_shapes import shapes_preset
    measured = {}
    for preset in args.data:
        config, folder = PRESETS[preset]
        data = osp.join(root, folder)
        # generated once (seed 0), reused when present
        generate_shapes_dataset(data, shapes_preset(preset))
        measured[f'{preset} shapes'] = measure(
            osp.join(root, config), data, 'train', args.max_images)
    text = table(measured)
    print(text)
    if args.results:
        path = results_io.write_results(
            args.results,
            dict(measured=measured, coco=coco_rows(), table=text),
            sys.argv if argv is None else [sys.argv[0], *argv])
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
