"""mmdet's CocoDataset with every bad image and annotation accounted for.

Stock ``CocoDataset`` skips degenerate boxes and unknown categories
silently, keeps boxes that reach outside the image unclipped, reads NaN
coordinates as whatever ``max``/``min`` make of them, raises a bare
``KeyError`` for a missing field, and a missing or corrupt image stops the
run from inside a dataloader worker. Here, deterministically:

* annotations: non-finite coordinates, zero or negative size, boxes
  entirely outside the image, boxes under 1 px once clipped, ``area`` ≤ 0
  and unknown ``category_id`` are **dropped**; boxes partly outside are
  **clipped** to the image; a missing ``area`` is taken from the box; all
  counted by reason and logged once with examples;
* images: entries without a positive ``width``/``height`` are dropped
  (counted); images without boxes stay as pure negatives (unless the
  config's ``filter_cfg`` removes them, as mmdet's training bases do);
* image files: missing files (and, with ``check_images='decode'``, files
  OpenCV cannot decode) are excluded up front with one warning naming
  them; evaluation then leaves them out of the AP explicitly (see
  ``ZeroIfEmptyCocoMetric``). A file that fails later, while training, is
  skipped with a warning naming it and another image is drawn (mmengine's
  refetch);
* malformed files (missing keys, wrong types) raise :class:`AnnotationError`
  naming the file, the image/annotation id and the key.
"""
import math
import os.path as osp
from collections import Counter
from typing import List, Optional

import cv2
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.logging import print_log

WARNING = 30  # logging.WARNING


class AnnotationError(ValueError):
    """An annotation file that is not a valid COCO detection file."""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """``CocoDataset`` that drops, clips and reports instead of failing.

    Args:
        check_images: ``'exists'`` (each file exists), ``'decode'`` (each
            file decodes, at 1/8 scale) or ``'none'``. Default: ``'decode'``
            in test mode (the evaluation set), ``'exists'`` otherwise.
        **kwargs: Passed to mmdet's :class:`CocoDataset`.
    """

    def __init__(self, *args, check_images: Optional[str] = None, **kwargs):
        if check_images not in (None, 'exists', 'decode', 'none'):
            raise ValueError(f"check_images={check_images!r}: expected "
                             "'exists', 'decode' or 'none'")
        classes = (kwargs.get('metainfo') or {}).get('classes')
        if classes is not None:
            # engine.cli imports no dataset code: no import cycle.
            from projects.focal_retina.engine.cli import check_class_names
            check_class_names(classes, 'metainfo.classes')
        test_mode = kwargs.get('test_mode', False)
        self.check_images = check_images or ('decode'
                                             if test_mode else 'exists')
        self.drops: Counter = Counter()
        self.examples: dict = {}
        self.excluded: List[str] = []
        self._skipped = 0
        self._bad: set = set()
        self._classes_checked = False
        super().__init__(*args, **kwargs)

    # -- annotations -----------------------------------------------------
    def _drop(self, reason: str, where: str) -> None:
        self.drops[reason] += 1
        self.examples.setdefault(reason, where)

    def load_data_list(self) -> List[dict]:
        try:
            data_list = super().load_data_list()
        except AnnotationError:
            raise
        except (KeyError, TypeError, IndexError, AttributeError,
                ValueError) as exc:
            raise AnnotationError(
                f'{self.ann_file}: not a COCO detection file '
                f'({type(exc).__name__}: {exc}); expected "images", '
                '"annotations" and "categories" lists with ids') from None
        data_list = self._exclude_unreadable(
            [d for d in data_list if d is not None])
        if self.drops:
            print_log(
                f'{self.ann_file}: ' +
                '; '.join(f'{n} {reason} (e.g. {self.examples[reason]})'
                          for reason, n in sorted(self.drops.items())),
                logger='current',
                level=WARNING)
        return data_list

    def _check_class_order(self) -> None:
        """``metainfo.classes`` must name categories of the file, in the
        file's order.

        mmdet looks the names up with ``get_cat_ids(cat_names=...)``, which
        returns the ids in the order of the file's ``categories``, and
        numbers the labels in that order: classes given in another order
        (the converters write them sorted) would put the wrong name on
        every detection, and a name the file lacks would shift the labels
        after it. Both are refused here, naming the file and the order to
        write.
        """
        wanted = list(self.metainfo.get('classes') or ())
        cats = self.coco.cats
        in_file = [c['name'] for c in cats.values()]
        found = [cats[i]['name'] for i in self.cat_ids]
        missing = [n for n in wanted if n not in in_file]
        if missing:
            raise AnnotationError(
                f'{self.ann_file}: metainfo.classes names '
                f'{", ".join(map(repr, missing))}, which the file\'s '
                f'categories do not have (it has {tuple(in_file)})')
        if found != wanted:
            raise AnnotationError(
                f'{self.ann_file}: metainfo.classes {tuple(wanted)} are in '
                'another order than the file\'s categories; mmdet numbers '
                'the labels in the file\'s order, so write classes = '
                f'{tuple(found)}')

    def parse_data_info(self, raw_data_info: dict):
        if not self._classes_checked:
            # mmdet deletes self.coco when load_data_list returns; its
            # categories are checked here, at the first image, instead.
            self._check_class_order()
            self._classes_checked = True
        img = raw_data_info['raw_img_info']
        img_id = img.get('img_id', img.get('id'))
        for key in ('file_name', 'width', 'height'):
            if key not in img:
                raise AnnotationError(f'{self.ann_file}: image {img_id} has '
                                      f'no "{key}"')
        width, height = img['width'], img['height']
        if not (_number(width) and _number(height) and width > 0
                and height > 0):
            self._drop('images dropped: width/height not positive numbers',
                       f'image {img_id} {width}x{height}')
            return None
        anns = []
        for ann in raw_data_info['raw_ann_info']:
            ann = self._checked_annotation(ann, img_id, width, height)
            if ann is not None:
                anns.append(ann)
        return super().parse_data_info(
            dict(raw_img_info=img, raw_ann_info=anns))

    def _checked_annotation(self, ann: dict, img_id, width,
                            height) -> Optional[dict]:
        where = f'annotation {ann.get("id")} of image {img_id}'
        box = ann.get('bbox')
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(
                _number(v) for v in box):
            raise AnnotationError(f'{self.ann_file}: {where}: bbox={box!r}, '
                                  'expected [x, y, w, h] numbers')
        if ann.get('ignore', False):
            return None  # mmdet's own convention, kept
        x, y, w, h = box
        if not all(math.isfinite(v) for v in box):
            return self._drop('boxes dropped: non-finite coordinates', where)
        if w <= 0 or h <= 0:
            return self._drop('boxes dropped: zero or negative size', where)
        x1, y1 = max(x, 0), max(y, 0)
        x2, y2 = min(x + w, width), min(y + h, height)
        if x2 <= x1 or y2 <= y1:
            return self._drop('boxes dropped: outside the image', where)
        if x2 - x1 < 1 or y2 - y1 < 1:
            return self._drop('boxes dropped: under 1 px once clipped', where)
        if ann.get('category_id') not in self.cat_ids:
            return self._drop('boxes dropped: unknown category_id', where)
        area = ann.get('area', w * h)
        if not _number(area) or not area > 0:
            return self._drop('boxes dropped: area not positive', where)
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            self._drop('boxes clipped to the image', where)  # counted, kept
        return {**ann, 'bbox': [x1, y1, x2 - x1, y2 - y1], 'area': area}

    # -- image files -----------------------------------------------------
    @staticmethod
    def _unreadable(path: str, decode: bool) -> Optional[str]:
        if not osp.isfile(path):
            return 'missing'
        if decode and cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_8) \
                is None:
            return 'cannot be decoded'
        return None

    def _exclude_unreadable(self, data_list: List[dict]) -> List[dict]:
        if self.check_images == 'none':
            return data_list
        kept = []
        for info in data_list:
            why = self._unreadable(info['img_path'],
                                   self.check_images == 'decode')
            if why is None:
                kept.append(info)
            else:
                self.excluded.append(f'{info["img_path"]} ({why})')
        if self.excluded:
            shown = ', '.join(self.excluded[:10])
            more = len(self.excluded) - 10
            print_log(
                f'{self.ann_file}: {len(self.excluded)} of {len(data_list)} '
                f'images excluded: {shown}' +
                (f' and {more} more' if more > 0 else ''),
                logger='current',
                level=WARNING)
        return kept

    def filter_data(self) -> List[dict]:
        data_list = super().filter_data()
        if not data_list:  # mmengine would fail serialising an empty list
            raise AnnotationError(
                f'{self.ann_file}: no usable image (excluded: '
                f'{len(self.excluded)}, dropped: {dict(self.drops)}, '
                f'filter_cfg={self.filter_cfg})')
        return data_list

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except Exception:
            path = self.get_data_info(idx)['img_path']
            why = self._unreadable(path, decode=True)
            if why is None or self.test_mode:
                raise
            self._bad.add(idx)
            if len(self._bad) == len(self):
                raise AnnotationError(
                    f'{self.ann_file}: none of the {len(self)} images can '
                    f'be read (e.g. {path}: {why})') from None
            self._skipped += 1
            print_log(
                f'skipped image {path} ({why}); {self._skipped} skipped '
                'so far in this worker',
                logger='current',
                level=WARNING)
            return None  # mmengine draws another image in training
