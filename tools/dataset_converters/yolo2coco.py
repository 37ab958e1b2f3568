"""Converts a YOLO-format dataset (one .txt per image) to COCO json.

    python tools/dataset_converters/yolo2coco.py IMAGES_DIR --names NAMES
        --out ann.json [--labels LABELS_DIR] [--split 0.8 --seed 0]

A label file has one line per box, ``class cx cy w h``: an integer class
index into the names file and the box centre and size normalised by the
image width and height. ``NAMES`` is a text file with one class name per
line (darknet ``.names``, ``classes.txt``) or an ultralytics ``data.yaml``
whose ``names`` is a list or an ``{index: name}`` mapping.

Label files: ``LABELS_DIR/<image path relative to IMAGES_DIR, .txt>``.
Default ``LABELS_DIR``: the ultralytics layout (the last ``images`` folder
of the path replaced by ``labels``) when that folder exists, else
``IMAGES_DIR`` itself (darknet: the .txt beside the image).

Negatives: an image without a label file, or with an empty one, is a
background image in YOLO's convention and is kept without boxes (counted
in the summary). A label file without an image is dropped with its boxes
("missing image"). A class index outside the names is dropped as
"unknown label 'N'". A ``classes.txt`` among the label files is the
class list of darknet / labelImg, not a label file. Box checks and the
report: see ``common.py``. A line that is not five numbers, or whose
class is not an integer, stops the conversion with ``FILE:LINE: ...``.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from tools.dataset_converters.common import (  # noqa: E402
    BOX_OF_DROPPED_IMAGE, MISSING_IMAGE, CocoBuilder, InputError, Report,
    add_common_args, check_box, list_images, load_image_size, run_cli,
    write_outputs)


def read_names(path: str) -> List[str]:
    """The class names of a names file or a data.yaml."""
    if not osp.isfile(path):
        raise InputError(f'names file {path!r} does not exist')
    if path.endswith(('.yaml', '.yml')):
        import yaml
        with open(path, encoding='utf-8') as f:
            names = (yaml.safe_load(f) or {}).get('names')
        if isinstance(names, dict):
            if sorted(names) != list(range(len(names))):
                raise InputError(f'{path}: names keys {sorted(names)} are '
                                 'not 0..N-1')
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list):
            raise InputError(f'{path}: expected a "names" list or mapping')
        names = [str(n) for n in names]
    else:
        with open(path, encoding='utf-8') as f:
            names = [line.strip() for line in f if line.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError(f'{path}: expected distinct class names, got '
                         f'{names}')
    return names


def default_labels_dir(images_dir: str) -> str:
    """ultralytics' ``.../images/...`` -> ``.../labels/...``, else the
    images folder itself."""
    parts = osp.normpath(osp.abspath(images_dir)).split(os.sep)
    if 'images' in parts:
        i = len(parts) - 1 - parts[::-1].index('images')
        candidate = os.sep.join(parts[:i] + ['labels'] + parts[i + 1:])
        if osp.isdir(candidate):
            return candidate
    return images_dir


def read_label_file(path: str,
                    where: str) -> List[Tuple[int, List[float], str]]:
    """``[(class index, [cx, cy, w, h], 'file:line'), ...]``."""
    rows = []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            loc = f'{where}:{lineno}'
            if len(fields) != 5:
                raise InputError(f'{loc}: {len(fields)} fields; expected 5: '
                                 'class cx cy w h')
            try:
                values = [float(v) for v in fields[1:]]
                cls = int(fields[0])
            except ValueError:
                raise InputError(f'{loc}: {line.strip()!r} is not an integer '
                                 'class and four numbers') from None
            rows.append((cls, values, loc))
    return rows


def convert(images_dir: str,
            names: Sequence[str],
            labels_dir: Optional[str] = None) -> Tuple[CocoBuilder, Report]:
    """The COCO builder and the report of a YOLO dataset.

    Args:
        images_dir: The folder of images (searched recursively).
        names: The class names; index i is YOLO class i.
        labels_dir: The folder of .txt files (default: see the module
            docstring).
    """
    if not osp.isdir(images_dir):
        raise InputError(f'images folder {images_dir!r} does not exist')
    labels_dir = labels_dir or default_labels_dir(images_dir)
    builder, report = CocoBuilder(names), Report()
    images = list_images(images_dir)
    stems = set()
    for rel in images:
        stem = osp.splitext(rel)[0]
        stems.add(stem)
        size = load_image_size(osp.join(images_dir, rel), rel, report)
        txt = osp.join(labels_dir, stem + '.txt')
        rows = read_label_file(txt, stem + '.txt') if osp.isfile(txt) \
            else []
        if size is None:
            for *_, loc in rows:
                report.drop(BOX_OF_DROPPED_IMAGE, loc)
            continue
        width, height = size
        image_id = builder.add_image(rel, width, height)
        for cls, (cx, cy, w, h), loc in rows:
            if not 0 <= cls < len(names):
                report.drop(f'unknown label {str(cls)!r}', loc)
                continue
            box = ((cx - w / 2) * width, (cy - h / 2) * height,
                   (cx + w / 2) * width, (cy + h / 2) * height)
            box = check_box(box, width, height, loc, report)
            if box is not None:
                builder.add_box(image_id, names[cls], box)
    # Label files whose image is not there: their boxes are lost.
    for rel in _label_files(labels_dir):
        stem = osp.splitext(rel)[0]
        if stem not in stems and osp.basename(stem) != 'classes':
            report.drop(MISSING_IMAGE, rel)
            for *_, loc in read_label_file(osp.join(labels_dir, rel), rel):
                report.drop(BOX_OF_DROPPED_IMAGE, loc)
    return builder, report


def _label_files(labels_dir: str) -> List[str]:
    found = []
    for folder, _, files in os.walk(labels_dir):
        found += [
            osp.relpath(osp.join(folder, n), labels_dir) for n in files
            if n.endswith('.txt')
        ]
    return sorted(found)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', help='the folder of images')
    parser.add_argument(
        '--names',
        required=True,
        help='class names: one per line, or a data.yaml with "names"')
    parser.add_argument(
        '--labels', help='the folder of .txt label files (see above)')
    add_common_args(parser, with_classes=False)
    args = parser.parse_args(argv)
    builder, report = convert(args.images, read_names(args.names), args.labels)
    write_outputs(builder, report, args.out, args.split, args.seed,
                  args.images)


if __name__ == '__main__':
    sys.exit(run_cli(main, None))
