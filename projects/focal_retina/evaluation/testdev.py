"""COCO test-dev submission: the evaluation server's file, checked.

The server takes ``detections_test-dev2017_<name>_results.json`` (zipped), a
list of {image_id, category_id, bbox [x, y, w, h], score} with COCO ids and at
most 100 detections per image. mmdet's CocoMetric with ``format_only`` writes
the list; this metric also names and zips it, and validates it against the
image-info file before the run finishes, so that a wrong category mapping or
a missing image is caught here rather than after an upload.
"""
import json
import math
import os
import os.path as osp
import re
import zipfile
from collections import Counter
from typing import Dict, List, Optional

from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.logging import print_log
from pycocotools.coco import COCO


def validate_submission(result_file: str,
                        image_info_file: str,
                        max_per_img: int = 100) -> int:
    """Checks a detection results file against a COCO image-info file.

    Args:
        result_file: The results JSON (a list of detections).
        image_info_file: The image-info JSON of the split (images and
            categories, e.g. ``image_info_test-dev2017.json``).
        max_per_img: Most detections the server accepts per image.

    Returns:
        The number of detections.

    Raises:
        ValueError: naming the file, the entry and what was expected.
    """
    with open(result_file) as f:
        dets = json.load(f)
    with open(image_info_file) as f:
        info = json.load(f)
    image_ids = {img['id'] for img in info['images']}
    cat_ids = {cat['id'] for cat in info['categories']}
    if not isinstance(dets, list) or not dets:
        raise ValueError(f'{result_file}: expected a non-empty list of '
                         'detections')
    for i, det in enumerate(dets):
        where = f'{result_file}: detection {i} ({det})'
        if set(det) != {'image_id', 'category_id', 'bbox', 'score'}:
            raise ValueError(f'{where}: expected exactly the keys image_id, '
                             'category_id, bbox, score')
        if det['image_id'] not in image_ids:
            raise ValueError(f'{where}: image_id not in {image_info_file}')
        if det['category_id'] not in cat_ids:
            raise ValueError(f'{where}: category_id is not one of the '
                             f'{len(cat_ids)} ids of {image_info_file}')
        box = det['bbox']
        if not isinstance(box, list) or len(box) != 4:
            raise ValueError(f'{where}: expected bbox [x, y, w, h]')
        # json.dump writes NaN/inf as NaN/Infinity (not JSON), which the
        # server rejects; json.load reads them back as floats.
        for key, v in zip(('x', 'y', 'w', 'h', 'score'), [*box, det['score']]):
            if isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or not math.isfinite(v):
                raise ValueError(f'{where}: {key}={v!r}, expected a finite '
                                 'number')
        if box[2] < 0 or box[3] < 0:
            raise ValueError(f'{where}: expected bbox [x, y, w, h], w, h>=0')
    per_image = Counter(det['image_id'] for det in dets)
    image_id, most = per_image.most_common(1)[0]
    if most > max_per_img:
        raise ValueError(f'{result_file}: image {image_id} has {most} '
                         f'detections; the server takes <= {max_per_img}')
    COCO(image_info_file).loadRes(result_file)  # the server's own loader
    return len(dets)


def submission_name_problem(name: str) -> Optional[str]:
    """Why ``name`` can not be the algorithm name of a test-dev file, or
    None. The server splits ``detections_test-dev2017_<name>_results.json``
    on ``_``, so the name holds letters, digits and ``-`` only."""
    if re.fullmatch(r'[A-Za-z0-9-]+', name or ''):
        return None
    return (f'--test-dev {name!r}: expected letters, digits and "-" only '
            '(the evaluation server splits the file name on "_"), e.g. '
            f'{submission_name(name or "model")!r}')


def submission_name(config: str) -> str:
    """A valid submission name for a config: its file stem with every other
    character turned into ``-`` (``retina_r101_fpn_1.5x.py`` ->
    ``retina-r101-fpn-1-5x``)."""
    stem = osp.splitext(osp.basename(config))[0] or 'model'
    return re.sub(r'[^A-Za-z0-9-]+', '-', stem).strip('-') or 'model'


@METRICS.register_module()
class CocoTestDevSubmission(CocoMetric):
    """Writes, zips and validates a COCO test-dev submission.

    Args:
        ann_file: The image-info file (``image_info_test-dev2017.json``).
        out_dir: Where the JSON and the zip go.
        name: The algorithm name in the file name (letters, digits, ``-``).
        max_per_img: Most detections per image the server accepts.
        **kwargs: Passed to mmdet's :class:`CocoMetric`.
    """

    def __init__(self,
                 ann_file: str,
                 out_dir: str,
                 name: str,
                 max_per_img: int = 100,
                 **kwargs) -> None:
        problem = submission_name_problem(name)
        if problem:
            raise ValueError(problem)
        if not osp.isfile(ann_file):
            raise FileNotFoundError(f'image-info file {ann_file} not found')
        self.result_file = osp.join(
            out_dir, f'detections_test-dev2017_{name}_results.json')
        self.image_info_file = ann_file
        self.max_per_img = max_per_img
        os.makedirs(out_dir, exist_ok=True)
        super().__init__(
            ann_file=ann_file,
            metric='bbox',
            format_only=True,
            outfile_prefix=osp.join(out_dir, f'.{name}'),
            **kwargs)

    def compute_metrics(self, results: List) -> Dict[str, float]:
        super().compute_metrics(results)  # writes <prefix>.bbox.json
        os.replace(f'{self.outfile_prefix}.bbox.json', self.result_file)
        num = validate_submission(self.result_file, self.image_info_file,
                                  self.max_per_img)
        zip_path = self.result_file[:-len('.json')] + '.zip'
        with zipfile.ZipFile(zip_path, 'w', zipfile.ZIP_DEFLATED) as zf:
            zf.write(self.result_file, osp.basename(self.result_file))
        print_log(
            f'test-dev submission: {num} detections on '
            f'{len(self._coco_api.imgs)} images validated; upload {zip_path}',
            logger='current')
        return {'num_detections': float(num)}
