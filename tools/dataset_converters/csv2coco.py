"""Converts a CSV of boxes to COCO json.

    python tools/dataset_converters/csv2coco.py boxes.csv --out ann.json
        [--img-root DIR] [--classes a,b | --classes names.txt]
        [--unlisted-as-negatives] [--split 0.8 --seed 0]

One row per box: ``image_path,xmin,ymin,xmax,ymax,label`` (the format of
many labelling tools and of tree / aerial datasets such as DeepForest's),
pixel coordinates of the box corners (COCO ``w = xmax - xmin``, nothing
subtracted). The header is optional: the first row is taken as one when its
four coordinates are not numbers; with a header, columns are found by name
(image_path|image|filename|file_name|path, xmin, ymin, xmax, ymax,
label|class|class_name|name; case-insensitive, other columns ignored), so
their order is free. Without a header a row has exactly six fields.

Image paths are relative to ``--img-root`` (default: the CSV's folder), or
absolute; the COCO ``file_name`` is the path as written in the CSV
(normalised: ``./a.jpg`` is ``a.jpg``).

Images without objects ("negatives"): an image that no row names is not in
the CSV and therefore not in the output. Two ways to keep negatives: a row
with the path and the five other fields empty (``img.jpg,,,,,``, the
keras-retinanet convention) lists an image with no box; and
``--unlisted-as-negatives`` adds every image under the image root that the
CSV does not name, without boxes.

Images keep the order of their first row; ids start at 1. Box checks,
clipping and the drop report: see ``common.py``; a row's label is checked
before its geometry (a row is counted once, under the first reason).
A malformed row (wrong number of fields, a coordinate that is not a
number, an empty label) stops the conversion with ``FILE:LINE: ...``.
"""
import argparse
import csv
import os.path as osp
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from tools.dataset_converters.common import (  # noqa: E402
    BOX_OF_DROPPED_IMAGE, CocoBuilder, InputError, Report, add_common_args,
    check_box, list_images, load_image_size, read_classes, run_cli,
    write_outputs)

COLUMNS = OrderedDict(
    image=('image_path', 'image', 'filename', 'file_name', 'path'),
    xmin=('xmin', ),
    ymin=('ymin', ),
    xmax=('xmax', ),
    ymax=('ymax', ),
    label=('label', 'class', 'class_name', 'name'))
Row = Tuple[Optional[List[float]], Optional[str], str]  # box, label, where


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header_columns(fields: List[str], where: str) -> List[int]:
    """The indices of the six columns named in a header row."""
    names = [f.strip().lower() for f in fields]
    indices = []
    for key, aliases in COLUMNS.items():
        found = [i for i, name in enumerate(names) if name in aliases]
        if len(found) != 1:
            raise InputError(
                f'{where}: header {fields} has {len(found)} columns for '
                f'{key!r}; expected one of {list(aliases)}')
        indices.append(found[0])
    return indices


def _parse_row(fields: List[str], where: str) -> Tuple[str, Row]:
    """``(image path, (box or None, label or None, where))``."""
    path, *coords, label = (f.strip() for f in fields)
    if not path:
        raise InputError(f'{where}: empty image path')
    if not any(coords) and not label:  # `img.jpg,,,,,`: a negative image
        return path, (None, None, where)
    bad = [c for c in coords if not _is_number(c)]
    if bad:
        raise InputError(f'{where}: coordinate {bad[0]!r} is not a number '
                         '(expected image_path,xmin,ymin,xmax,ymax,label)')
    if not label:
        raise InputError(f'{where}: empty label')
    return path, ([float(c) for c in coords], label, where)


def read_csv(csv_path: str) -> Dict[str, List[Row]]:
    """``{image path: [row, ...]}`` in the order of first appearance."""
    images: Dict[str, List[Row]] = OrderedDict()
    name = osp.basename(csv_path)
    columns = None
    first = True
    with open(csv_path, newline='', encoding='utf-8-sig') as f:
        reader = csv.reader(f)
        for fields in reader:
            where = f'{name}:{reader.line_num}'
            if not any(x.strip() for x in fields):
                continue  # a blank line
            if first and len(fields) >= 5 and not any(
                    _is_number(x) or not x.strip() for x in fields[1:5]):
                first = False
                columns = _header_columns(fields, where)
                continue
            first = False
            if columns is not None:
                if len(fields) <= max(columns):
                    raise InputError(f'{where}: {len(fields)} fields, the '
                                     f'header has {max(columns) + 1}')
                fields = [fields[i] for i in columns]
            elif len(fields) != 6:
                raise InputError(f'{where}: {len(fields)} fields; expected 6: '
                                 'image_path,xmin,ymin,xmax,ymax,label')
            path, row = _parse_row(fields, where)
            path = osp.normpath(path)  # './a.jpg' and 'a.jpg' are one image
            images.setdefault(path, [])
            if row[0] is not None:
                images[path].append(row)
    return images


def convert(csv_path: str,
            img_root: Optional[str] = None,
            classes: Optional[Sequence[str]] = None,
            unlisted_as_negatives: bool = False) -> Tuple[CocoBuilder, Report]:
    """The COCO builder and the report of a CSV of boxes.

    Args:
        csv_path: The CSV file.
        img_root: The folder image paths are relative to (default: the
            CSV's folder).
        classes: The class names, in category-id order; boxes of other
            labels are dropped. Default: every label found, sorted.
        unlisted_as_negatives: Also add, without boxes, every image under
            ``img_root`` that the CSV does not name.
    """
    if not osp.isfile(csv_path):
        raise InputError(f'CSV file {csv_path!r} does not exist')
    img_root = osp.dirname(osp.abspath(csv_path)) if img_root is None \
        else img_root
    if not osp.isdir(img_root):
        raise InputError(f'image root {img_root!r} is not a folder')
    images = read_csv(csv_path)
    if unlisted_as_negatives:
        for rel in list_images(img_root):
            images.setdefault(rel, [])
    if classes is None:
        classes = sorted({r[1] for rows in images.values() for r in rows})
    builder, report = CocoBuilder(classes), Report()
    for path, rows in images.items():
        size = load_image_size(osp.join(img_root, path), path, report)
        if size is None:
            for _, _, where in rows:
                report.drop(BOX_OF_DROPPED_IMAGE, where)
            continue
        image_id = builder.add_image(path, *size)
        for box, label, where in rows:
            if label not in builder.cat_ids:
                report.drop(f'unknown label {label!r}', where)
                continue
            box = check_box(box, size[0], size[1], where, report)
            if box is not None:
                builder.add_box(image_id, label, box)
    return builder, report


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('csv', help='the CSV of boxes')
    parser.add_argument(
        '--img-root',
        help='folder the image paths are relative to (default: the CSV\'s)')
    parser.add_argument(
        '--unlisted-as-negatives',
        action='store_true',
        help='add every image under the image root that the CSV does not '
        'name, without boxes')
    add_common_args(parser)
    args = parser.parse_args(argv)
    img_root = args.img_root or osp.dirname(osp.abspath(args.csv))
    builder, report = convert(args.csv, img_root, read_classes(args.classes),
                              args.unlisted_as_negatives)
    write_outputs(builder, report, args.out, args.split, args.seed, img_root)


if __name__ == '__main__':
    sys.exit(run_cli(main, None))
