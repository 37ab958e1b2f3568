"""Deterministic synthetic COCO-format dataset of dense shapes.

The main job of the toolkit needs data that exists on every machine, is hard
enough to show the detector learning (many small objects, clutter) and easy
enough to learn from scratch on a CPU in minutes. Images are drawn with
OpenCV from a seed: the same seed and parameters give identical bytes.

Layout written under ``root``::

    root/meta.json                 the generation parameters
    root/annotations/{split}.json  COCO detection ground truth
    root/{split}/NNNNNN.png        the images
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np
from mmdet.registry import DATASETS

from .checked_coco import CheckedCocoDataset

SHAPE_CLASSES = ('circle', 'square', 'triangle', 'cross')
SPLITS = ('train', 'val')


@DATASETS.register_module()
class SyntheticShapesDataset(CheckedCocoDataset):
    """COCO dataset with the classes of :func:`generate_shapes_dataset`."""

    METAINFO = {
        'classes': SHAPE_CLASSES,
        'palette': [(220, 20, 60), (0, 130, 255), (0, 170, 0), (250, 170, 30)],
    }


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of a generated dataset (stored in ``meta.json``).

    Args:
        seed: Seed of the whole dataset; each image has its own stream
            derived from (seed, split, index).
        num_train: Number of training images.
        num_val: Number of validation images.
        img_size: Side of the square images in pixels.
        min_objects: Fewest objects in an image.
        max_objects: Most objects in an image.
        min_size: Smallest object side in pixels.
        max_size: Largest object side in pixels.
        clutter: Number of distractor strokes drawn under the objects.
    """
    seed: int = 0
    num_train: int = 600
    num_val: int = 100
    img_size: int = 256
    min_objects: int = 6
    max_objects: int = 14
    min_size: int = 14
    max_size: int = 48
    clutter: int = 12

    def validate(self) -> None:
        """Raises ValueError naming the first inconsistent parameter."""
        checks = [
            ('num_train', self.num_train >= 1),
            ('num_val', self.num_val >= 1),
            ('img_size', self.img_size >= 32),
            ('min_objects', 1 <= self.min_objects <= self.max_objects),
            ('min_size', 4 <= self.min_size <= self.max_size),
            ('max_size', self.max_size < self.img_size),
            ('clutter', self.clutter >= 0),
        ]
        for key, ok in checks:
            if not ok:
                raise ValueError(f'ShapesSpec: invalid {key}='
                                 f'{getattr(self, key)!r} in {self}')


# Named presets of ``tools/make_shapes.py --preset`` and of the benchmarks.
# ``dense`` is ShapesSpec's default (the main job's data, byte-identical to
# what it always was). ``sparse`` puts the paper's foreground-background
# imbalance at the model's input: larger images with 1-4 small objects of
# the same classes, and clutter strokes scaled with the side (a stroke's
# length grows with the side, so 12 * 384 / 256 = 18 strokes keep the share
# of the image they cover about the same). At the demo model's input
# (384 px, anchors of 2x the stride) that is ~28k anchors per image against
# ~20 positive ones, > 1000:1 (benchmarks/imbalance.py measures it).
SHAPES_PRESETS: Dict[str, ShapesSpec] = {
    'dense':
    ShapesSpec(),
    'sparse':
    ShapesSpec(
        img_size=384,
        min_objects=1,
        max_objects=4,
        min_size=14,
        max_size=32,
        clutter=18),
}


def shapes_preset(name: str, **overrides) -> ShapesSpec:
    """The ShapesSpec of preset ``name`` with some fields replaced.

    Args:
        name: A key of :data:`SHAPES_PRESETS` (``'dense'``, ``'sparse'``).
        **overrides: ShapesSpec fields to change (None values are ignored).

    Raises:
        KeyError: ``name`` is not a preset.
    """
    if name not in SHAPES_PRESETS:
        raise KeyError(f'unknown shapes preset {name!r}; expected one of '
                       f'{sorted(SHAPES_PRESETS)}')
    fields = asdict(SHAPES_PRESETS[name])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ShapesSpec(**fields)


def _background(rng: np.random.Generator, size: int,
                clutter: int) -> np.ndarray:
    """A smooth colour gradient with noise and distractor strokes."""
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    t = np.linspace(0.0, 1.0, size)[None, :, None]
    img = c0 * (1 - t) + c1 * t
    img = np.repeat(img, size, axis=0)
    img += rng.normal(0, 12, size=img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(clutter):
        p0 = tuple(int(v) for v in rng.integers(0, size, 2))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, p0, p1, color, int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _draw_shape(img: np.ndarray, label: int, box: Tuple[int, int, int, int],
                color: Tuple[int, int, int]) -> None:
    """Draws shape ``label`` filling the box (x0, y0, x1, y1) exactly."""
    x0, y0, x1, y1 = box
    name = SHAPE_CLASSES[label]
    if name == 'circle':
        # The RotatedRect form takes the ellipse's full width and height
        # (not the semi-axes of the other cv2.ellipse form); the last
        # pixel row/column of the box is x1 - 1 / y1 - 1.
        center = ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2)
        size = (x1 - x0 - 1, y1 - y0 - 1)
        cv2.ellipse(img, (center, size, 0.0), color, -1, cv2.LINE_AA)
    elif name == 'square':
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), color, -1)
    elif name == 'triangle':
        pts = np.array([[(x0 + x1) // 2, y0], [x0, y1 - 1], [x1 - 1, y1 - 1]])
        cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)
    else:  # cross: two bars of a third of the side
        w, h = x1 - x0, y1 - y0
        cv2.rectangle(img, (x0 + w // 3, y0), (x0 + 2 * w // 3, y1 - 1), color,
                      -1)
        cv2.rectangle(img, (x0, y0 + h // 3), (x1 - 1, y0 + 2 * h // 3), color,
                      -1)


def _overlap(box: np.ndarray, boxes: List[np.ndarray]) -> float:
    """Largest fraction of ``box`` covered by one of ``boxes``."""
    if not boxes:
        return 0.0
    b = np.stack(boxes)
    iw = np.minimum(box[2], b[:, 2]) - np.maximum(box[0], b[:, 0])
    ih = np.minimum(box[3], b[:, 3]) - np.maximum(box[1], b[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    return float(inter.max() / ((box[2] - box[0]) * (box[3] - box[1])))


def render_image(spec: ShapesSpec, split: str,
                 index: int) -> Tuple[np.ndarray, List[Dict]]:
    """Renders one image and its objects.

    Returns:
        The BGR image (H, W, 3) uint8 and a list of objects with ``bbox``
        (x, y, w, h in pixels) and ``label`` (index into SHAPE_CLASSES).
    """
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
    size = spec.img_size
    img = _background(rng, size, spec.clutter)
    mean = img.reshape(-1, 3).mean(0)
    num = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    boxes, objects = [], []
    for _ in range(num * 4):  # rejection sampling against heavy overlap
        if len(objects) == num:
            break
        w, h = rng.integers(spec.min_size, spec.max_size + 1, 2)
        if rng.random() < 0.5:  # mostly square-ish, sometimes elongated
            h = w
        x0 = int(rng.integers(0, size - w + 1))
        y0 = int(rng.integers(0, size - h + 1))
        box = np.array([x0, y0, x0 + w, y0 + h], dtype=np.int64)
        if _overlap(box, boxes) > 0.2:
            continue
        # Colours far from the image mean keep every object visible.
        color = rng.integers(0, 256, 3)
        while np.abs(color - mean).sum() < 150:
            color = rng.integers(0, 256, 3)
        label = int(rng.integers(len(SHAPE_CLASSES)))
        _draw_shape(img, label, tuple(int(v) for v in box),
                    tuple(int(v) for v in color))
        boxes.append(box)
        objects.append(dict(bbox=[x0, y0, int(w), int(h)], label=label))
    return img, objects


def _coco_json(spec: ShapesSpec, split: str, out_dir: str) -> Dict:
    """Renders a split into ``out_dir`` and returns its COCO dict."""
    num = spec.num_train if split == 'train' else spec.num_val
    images, annotations = [], []
    for index in range(num):
        img, objects = render_image(spec, split, index)
        file_name = f'{index:06d}.png'
        cv2.imwrite(osp.join(out_dir, file_name), img)
        images.append(
            dict(
                id=index + 1,
                file_name=file_name,
                width=spec.img_size,
                height=spec.img_size))
        for obj in objects:
            x, y, w, h = obj['bbox']
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=index + 1,
                    category_id=obj['label'] + 1,
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=0))
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(SHAPE_CLASSES)
    ]
    return dict(images=images, annotations=annotations, categories=categories)


def generate_shapes_dataset(root: str,
                            spec: ShapesSpec = ShapesSpec(),
                            force: bool = False) -> bool:
    """Writes the dataset under ``root`` unless it is already there.

    The dataset is built in a temporary folder beside ``root`` and moved into
    place at the end, so an interrupted run never leaves a half-written
    dataset that a later run would take as complete.

    Args:
        root: Output folder.
        spec: Generation parameters.
        force: Regenerate even if ``root`` holds a dataset of this spec.

    Returns:
        True if the dataset was generated, False if it was reused.

    Raises:
        FileExistsError: ``root`` holds something else (other parameters or
            foreign files) and ``force`` is not set.
    """
    spec.validate()
    meta_path = osp.join(root, 'meta.json')
    if osp.exists(root) and not force:
        if osp.exists(meta_path):
            with open(meta_path) as f:
                if json.load(f) == asdict(spec):
                    return False
        raise FileExistsError(
            f'{root} exists but does not hold a shapes dataset with '
            f'parameters {asdict(spec)}; pass force=True (--force) to '
            'replace it or choose another folder')
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.shapes-', dir=parent)
    try:
        os.makedirs(osp.join(tmp, 'annotations'))
        for split in SPLITS:
            os.makedirs(osp.join(tmp, split))
            coco = _coco_json(spec, split, osp.join(tmp, split))
            with open(osp.join(tmp, 'annotations', f'{split}.json'), 'w') as f:
                json.dump(coco, f, sort_keys=True)
        with open(osp.join(tmp, 'meta.json'), 'w') as f:
            json.dump(asdict(spec), f, sort_keys=True, indent=1)
        if osp.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True
