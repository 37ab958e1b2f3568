"""Converts a folder of Pascal VOC XML files to COCO json.

    python tools/dataset_converters/voc2coco.py ANN_DIR --out ann.json
        [--img-root DIR] [--ids ImageSets/Main/train.txt]
        [--classes voc | a,b | names.txt] [--difficult crowd|keep|drop]
        [--zero-based] [--split 0.8 --seed 0]

``ANN_DIR`` is a folder of .xml files (searched recursively) as labelImg,
CVAT and the VOC devkit write them, or a devkit year folder (``VOC2007``,
holding ``Annotations/`` and ``JPEGImages/``). The image of an XML is its
``<filename>`` (or, without one, an image of the XML's name) under
``--img-root``; default: ``JPEGImages/`` beside the annotations folder if
there is one, else ``ANN_DIR`` itself (labelImg saves the XML beside the
image). ``--ids`` keeps the XML files whose names (no extension) are listed
in that file, one per line, in that order.

Conventions follow mmdet's VOC reader (``mmdet/datasets/xml_style.py``,
``tools/dataset_converters/pascal_voc.py``): VOC coordinates are 1-based
pixel indices and 1 is subtracted from all four (``--zero-based``: for
tools that write 0-based coordinates, nothing is subtracted); a
``difficult`` object becomes ``iscrowd=1``, i.e. ignored in training and
in COCO evaluation (``--difficult keep``: a normal box; ``drop``: dropped,
counted in the report); ``--classes voc`` is mmdet's ``voc_classes()``.
mmdet's converter itself is not reused: it only knows the 20 VOC classes
(``KeyError`` on any other name), the devkit's folder layout and integer
coordinates, and reports nothing; floats are kept here (CVAT writes them).

Sizes come from the images; an XML ``<size>`` that differs is reported (a
note; the image's size is used). An XML without objects gives an image
without boxes. Box checks and the report: see ``common.py``; labels are
checked before geometry. Invalid XML, an object without a ``name`` or
``bndbox``, or a coordinate that is not a number stops the conversion with
``FILE: ...`` (``FILE:LINE:COLUMN`` for invalid XML).
"""
import argparse
import os
import os.path as osp
import sys
import xml.etree.ElementTree as ET
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from tools.dataset_converters.common import (  # noqa: E402
    BOX_OF_DROPPED_IMAGE, IMG_EXT, CocoBuilder, InputError, Report,
    add_common_args, check_box, load_image_size, read_classes, run_cli,
    write_outputs)

DIFFICULT = 'difficult'
Obj = Tuple[str, List[float], bool, str]  # name, box, difficult, where


def _text(elem: Optional[ET.Element], tag: str) -> Optional[str]:
    child = elem.find(tag) if elem is not None else None
    return None if child is None or child.text is None else \
        child.text.strip()


def parse_xml(
    path: str,
    where: str,
    minus_one: bool = True
) -> Tuple[Optional[str], Optional[Tuple[int, int]], List[Obj]]:
    """``(<filename>, (width, height) of <size> or None, objects)``."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise InputError(f'{where}:{line}:{col}: not valid XML '
                         f'({exc})') from None
    size = root.find('size')
    try:
        xml_size = (int(float(_text(size, 'width'))),
                    int(float(_text(size, 'height'))))
    except (TypeError, ValueError):
        xml_size = None
    objects = []
    for k, obj in enumerate(root.findall('object'), start=1):
        loc = f'{where}: object {k}'
        name, bnd = _text(obj, 'name'), obj.find('bndbox')
        if not name or bnd is None:
            raise InputError(f'{loc}: no <name> or no <bndbox>')
        try:
            box = [
                float(_text(bnd, t)) for t in ('xmin', 'ymin', 'xmax', 'ymax')
            ]
        except (TypeError, ValueError):
            coords = [_text(bnd, t) for t in ('xmin', 'ymin', 'xmax', 'ymax')]
            raise InputError(f'{loc} ({name!r}): bndbox {coords} is not four '
                             'numbers xmin ymin xmax ymax') from None
        if minus_one:
            box = [v - 1 for v in box]
        difficult = _text(obj, 'difficult') in ('1', 'true', 'True')
        objects.append((name, box, difficult, loc))
    return _text(root, 'filename'), xml_size, objects


def find_layout(ann_dir: str, img_root: Optional[str]) -> Tuple[str, str]:
    """``(annotations folder, image root)`` of a folder or devkit year."""
    if not osp.isdir(ann_dir):
        raise InputError(f'annotations folder {ann_dir!r} does not exist')
    if osp.isdir(osp.join(ann_dir, 'Annotations')):
        ann_dir = osp.join(ann_dir, 'Annotations')
    if img_root is None:
        beside = osp.join(osp.dirname(osp.abspath(ann_dir)), 'JPEGImages')
        img_root = beside if osp.isdir(beside) else ann_dir
    return ann_dir, img_root


def list_xml(ann_dir: str, ids_file: Optional[str]) -> List[str]:
    """The XML files to convert, relative to ``ann_dir``."""
    if ids_file is not None:
        if not osp.isfile(ids_file):
            raise InputError(f'--ids file {ids_file!r} does not exist')
        with open(ids_file, encoding='utf-8') as f:
            # devkit lists may carry a second column (the per-class lists)
            return [ln.split()[0] + '.xml' for ln in f if ln.strip()]
    found = []
    for folder, _, files in os.walk(ann_dir):
        found += [
            osp.relpath(osp.join(folder, n), ann_dir) for n in files
            if n.lower().endswith('.xml')
        ]
    return sorted(found)


def _image_name(filename: Optional[str], xml_rel: str, img_root: str) -> str:
    """The image path relative to ``img_root``."""
    if filename:
        return filename
    stem = osp.splitext(xml_rel)[0]
    for ext in IMG_EXT:
        if osp.isfile(osp.join(img_root, stem + ext)):
            return stem + ext
    return stem + '.jpg'


def convert(ann_dir: str,
            img_root: Optional[str] = None,
            classes: Optional[Sequence[str]] = None,
            ids_file: Optional[str] = None,
            difficult: str = 'crowd',
            minus_one: bool = True) -> Tuple[CocoBuilder, Report, str]:
    """The COCO builder, the report and the image root of VOC XML files.

    Args:
        ann_dir: A folder of .xml files, or a devkit year folder.
        img_root: The folder of the images (default: see the docstring).
        classes: The class names in category-id order; objects of other
            names are dropped. Default: every name found, sorted.
        ids_file: Convert only the names listed in it (VOC ImageSets).
        difficult: 'crowd' (iscrowd=1), 'keep' or 'drop'.
        minus_one: Subtract 1 from the coordinates (1-based VOC pixels).
    """
    if difficult not in ('crowd', 'keep', 'drop'):
        raise InputError(f"difficult={difficult!r}: expected 'crowd', "
                         "'keep' or 'drop'")
    ann_dir, img_root = find_layout(ann_dir, img_root)
    parsed = []
    report = Report()
    for rel in list_xml(ann_dir, ids_file):
        if not osp.isfile(osp.join(ann_dir, rel)):
            report.drop('missing XML file', rel)
            continue
        parsed.append(
            (rel,
             *parse_xml(osp.join(ann_dir, rel), rel, minus_one=minus_one)))
    if classes is None:
        classes = sorted({o[0] for *_, objs in parsed for o in objs})
    builder = CocoBuilder(classes)
    for rel, filename, xml_size, objects in parsed:
        name = _image_name(filename, rel, img_root)
        size = load_image_size(osp.join(img_root, name), name, report)
        if size is None:
            for *_, loc in objects:
                report.drop(BOX_OF_DROPPED_IMAGE, loc)
            continue
        if xml_size is not None and tuple(xml_size) != tuple(size):
            report.note('XML <size> differs from the image (image size used)',
                        rel)
        image_id = builder.add_image(name, *size)
        for label, box, is_difficult, loc in objects:
            if label not in builder.cat_ids:
                report.drop(f'unknown label {label!r}', loc)
                continue
            if is_difficult and difficult == 'drop':
                report.drop(DIFFICULT, loc)
                continue
            box = check_box(box, size[0], size[1], loc, report)
            if box is None:
                continue
            crowd = is_difficult and difficult == 'crowd'
            if crowd:
                report.note('difficult -> iscrowd=1', loc)
            builder.add_box(image_id, label, box, iscrowd=crowd)
    return builder, report, img_root


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('ann_dir', help='folder of VOC .xml files')
    parser.add_argument('--img-root', help='folder of the images')
    parser.add_argument('--ids', help='file of the XML names to convert')
    parser.add_argument(
        '--difficult', choices=('crowd', 'keep', 'drop'), default='crowd')
    parser.add_argument(
        '--zero-based',
        action='store_true',
        help='coordinates are 0-based: subtract nothing')
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.classes == 'voc':
        from mmdet.evaluation import voc_classes
        classes = voc_classes()
    else:
        classes = read_classes(args.classes)
    builder, report, img_root = convert(args.ann_dir, args.img_root, classes,
                                        args.ids, args.difficult,
                                        not args.zero_based)
    write_outputs(builder, report, args.out, args.split, args.seed, img_root)


if __name__ == '__main__':
    sys.exit(run_cli(main, None))
