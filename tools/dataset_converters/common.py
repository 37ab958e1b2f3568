"""Shared by the converters to COCO (voc2coco, csv2coco, yolo2coco): the box
checks, the report of what was dropped, the train/val split, the COCO
builder and its atomic writer, and the arguments every converter takes.

What happens to a box (the same rules in every converter):

* a NaN or infinite coordinate: dropped ("non-finite coordinate");
* xmax <= xmin or ymax <= ymin as written: dropped ("zero or negative
  size");
* partly outside the image: clipped to the image and kept ("clipped to the
  image", a note, not a drop);
* no overlap with the image at all: dropped ("outside the image");
* narrower or lower than 1 px after clipping: dropped ("under 1 px after
  clipping") -- mmdet's CocoDataset would skip it silently at load time
  (``w < 1 or h < 1`` in ``parse_data_info``);
* a label not among the classes: dropped ("unknown label 'x'", per label).

An image that does not exist or cannot be read is dropped with its boxes.
Sizes are those of the decoded image as mmcv's cv2 backend sees it, i.e.
after the EXIF orientation is applied (width and height swapped for the
orientations 5-8), read from the file header only (no full decode).
"""
import argparse
import json
import math
import os
import os.path as osp
import random
import sys
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# mmdet's DetInferencer IMG_EXTENSIONS (tools/infer.py uses the same list).
IMG_EXT = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff',
           '.webp')
NON_FINITE = 'non-finite coordinate'
DEGENERATE = 'zero or negative size'
OUTSIDE = 'outside the image'
TINY = 'under 1 px after clipping'
CLIPPED = 'clipped to the image'
MISSING_IMAGE = 'missing image'
UNREADABLE_IMAGE = 'unreadable image'
BOX_OF_DROPPED_IMAGE = 'box of a dropped image'
Box = Tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


class InputError(ValueError):
    """Malformed input; the message names the file (and line) at fault."""


class Report:
    """What a conversion dropped, and what it kept but changed, by reason.

    Each entry is the reason and the places (``file:line``, file or image
    names) where it happened, in input order.
    """

    def __init__(self) -> None:
        self.dropped: Dict[str, List[str]] = OrderedDict()
        self.notes: Dict[str, List[str]] = OrderedDict()

    def drop(self, reason: str, where: str) -> None:
        self.dropped.setdefault(reason, []).append(where)

    def note(self, reason: str, where: str) -> None:
        self.notes.setdefault(reason, []).append(where)

    def counts(self) -> Dict[str, int]:
        """``{reason: count}`` of the dropped items."""
        return {k: len(v) for k, v in self.dropped.items()}

    def note_counts(self) -> Dict[str, int]:
        return {k: len(v) for k, v in self.notes.items()}

    def format(self, examples: int = 5) -> str:
        """One line per reason: count and the first ``examples`` places."""
        lines = []
        for title, table in (('dropped', self.dropped), ('kept, changed',
                                                         self.notes)):
            for reason, where in table.items():
                more = ', ...' if len(where) > examples else ''
                lines.append(f'  {title}: {reason}: {len(where)} '
                             f'({", ".join(where[:examples])}{more})')
        return '\n'.join(lines) if lines else '  nothing dropped'


def check_box(box: Sequence[float], width: int, height: int, where: str,
              report: Report) -> Optional[Box]:
    """The box clipped to a ``width`` x ``height`` image, or None (dropped,
    reason recorded in ``report``). See the module docstring for the rules.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        report.drop(NON_FINITE, where)
        return None
    if x2 <= x1 or y2 <= y1:
        report.drop(DEGENERATE, where)
        return None
    cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
    cx2, cy2 = min(x2, float(width)), min(y2, float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        report.drop(OUTSIDE, where)
        return None
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        report.drop(TINY, where)
        return None
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        report.note(CLIPPED, where)
    return cx1, cy1, cx2, cy2


def image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` of an image as cv2 decodes it (EXIF orientation
    applied); raises OSError if the file cannot be read as an image."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except Exception as exc:  # PIL raises many types on bad files
        raise OSError(f'{type(exc).__name__}: {exc}') from exc
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
        width, height = height, width
    return width, height


def load_image_size(path: str, where: str,
                    report: Report) -> Optional[Tuple[int, int]]:
    """The size of the image at ``path``, or None (reported as missing or
    unreadable, named by ``where``)."""
    if not osp.isfile(path):
        report.drop(MISSING_IMAGE, where)
        return None
    try:
        return image_size(path)
    except OSError:
        report.drop(UNREADABLE_IMAGE, where)
        return None


def list_images(root: str) -> List[str]:
    """Image files under ``root`` (recursive), relative to it, sorted."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(IMG_EXT):
                found.append(osp.relpath(osp.join(folder, name), root))
    return sorted(found)


def read_classes(spec: Optional[str]) -> Optional[List[str]]:
    """``--classes``: a file with one name per line, or names separated by
    commas; None when not given (the classes are then those found)."""
    if spec is None:
        return None
    if osp.isfile(spec):
        with open(spec, encoding='utf-8') as f:
            names = [line.strip() for line in f]
    else:
        names = [name.strip() for name in spec.split(',')]
    names = [name for name in names if name]
    if not names or len(set(names)) != len(names):
        raise InputError(f'--classes {spec!r}: expected distinct, non-empty '
                         f'class names, got {names}')
    return names


class CocoBuilder:
    """Collects images and boxes; ``to_dict`` gives the COCO dictionary.

    Image, annotation and category ids start at 1 in insertion order
    (category ids follow ``classes``); ``bbox`` is ``[x, y, w, h]`` and
    ``area`` is ``w * h``, as mmdet's CocoDataset reads them.
    """

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.cat_ids = {name: i + 1 for i, name in enumerate(self.classes)}
        self.images: List[dict] = []
        self.annotations: List[dict] = []

    def add_image(self, file_name: str, width: int, height: int) -> int:
        image_id = len(self.images) + 1
        self.images.append(
            dict(
                id=image_id,
                file_name=file_name,
                width=int(width),
                height=int(height)))
        return image_id

    def add_box(self,
                image_id: int,
                label: str,
                box: Box,
                iscrowd: bool = False) -> None:
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        self.annotations.append(
            dict(
                id=len(self.annotations) + 1,
                image_id=image_id,
                category_id=self.cat_ids[label],
                bbox=[x1, y1, w, h],
                area=w * h,
                iscrowd=int(iscrowd),
                segmentation=[]))

    def to_dict(self, image_ids: Optional[Sequence[int]] = None) -> dict:
        """The COCO dictionary of all images, or of ``image_ids`` only."""
        keep = set(i['id'] for i in self.images) if image_ids is None \
            else set(image_ids)
        return dict(
            images=[i for i in self.images if i['id'] in keep],
            annotations=[a for a in self.annotations if a['image_id'] in keep],
            categories=[
                dict(id=i, name=name, supercategory='none')
                for name, i in self.cat_ids.items()
            ])


def split_ids(ids: Sequence[int], fraction: float,
              seed: int) -> Tuple[List[int], List[int]]:
    """A random image split: ``round(fraction * n)`` ids for training (at
    least one image on each side when n >= 2), the rest for validation; the
    same ids, fraction and seed give the same split. Both lists sorted."""
    if not 0 < fraction < 1:
        raise InputError(f'--split {fraction}: expected a fraction of the '
                         'images for training, 0 < split < 1')
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_train = int(round(fraction * len(order)))
    if len(order) >= 2:
        n_train = min(max(n_train, 1), len(order) - 1)
    return sorted(order[:n_train]), sorted(order[n_train:])


def write_json_atomic(obj: dict, path: str) -> None:
    """Writes ``obj`` to a temporary file beside ``path``, then renames it
    over ``path``: a reader never sees a half-written file."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def add_common_args(parser: argparse.ArgumentParser,
                    with_classes: bool = True) -> None:
    """``--out``, ``--split``, ``--seed`` and (``with_classes``)
    ``--classes``."""
    parser.add_argument(
        '--out',
        required=True,
        help='the COCO json to write (with --split: '
        'OUT_train.json and OUT_val.json beside it)')
    if with_classes:
        parser.add_argument(
            '--classes',
            help='class names: a file with one per line or a comma-separated'
            ' list; boxes of other labels are dropped (default: every label '
            'found, sorted)')
    parser.add_argument(
        '--split',
        type=float,
        help='fraction of the images for training, e.g. 0.8')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the --split shuffle')


def write_outputs(builder: CocoBuilder, report: Report, out: str,
                  split: Optional[float], seed: int,
                  img_root: str) -> List[str]:
    """Writes the COCO file(s) and prints the summary and the report.

    Returns the paths written.
    """
    if split is None:
        parts = [(out, None)]
    else:
        train, val = split_ids([i['id'] for i in builder.images], split, seed)
        stem = out[:-5] if out.endswith('.json') else out
        parts = [(f'{stem}_train.json', train), (f'{stem}_val.json', val)]
    for path, ids in parts:
        coco = builder.to_dict(ids)
        write_json_atomic(coco, path)
        with_boxes = len(set(a['image_id'] for a in coco['annotations']))
        print(f'wrote {path}: {len(coco["images"])} images '
              f'({len(coco["images"]) - with_boxes} without boxes), '
              f'{len(coco["annotations"])} boxes')
    print(f'classes ({len(builder.classes)}): {", ".join(builder.classes)}')
    print(f'file_name is relative to {img_root!r}: set the dataset\'s '
          f"data_prefix=dict(img='{img_root.rstrip('/')}/')")
    print(report.format())
    return [p for p, _ in parts]


def run_cli(main_fn, argv: Optional[Sequence[str]]) -> int:
    """Runs a converter's main; malformed input ends in one error line."""
    from projects.focal_retina.engine.cli import fail
    try:
        main_fn(argv)
    except InputError as exc:
        fail(str(exc))
    return 0
