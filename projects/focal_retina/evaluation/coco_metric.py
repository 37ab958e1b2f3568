"""COCO AP that reports 0, not nothing, when nothing was detected, and
evaluates only the images that were run.

mmdet's ``CocoMetric`` on a model that outputs no box above its score
threshold on the whole evaluation set (an untrained or diverged model, a
too-high ``test_cfg.score_thr``) logs an ERROR ("The testing results of the
whole dataset is empty") and returns no metrics at all: the run finishes
"successfully", the checkpoint hook finds no ``coco/bbox_mAP`` to compare
and the results table has a hole. The honest value is AP 0 for every
field, with a warning saying why.

mmdet's metric also scores every image of the annotation file, so an image
the dataset had to exclude (a missing or corrupt file, see
``CheckedCocoDataset``) would count as all its objects missed. Here the AP
is over the images that produced results, and the excluded ones are named
in a warning.

With ``keep_for_plots=True`` the metric also keeps what the plots of
``evaluation/plots.py`` need from its last evaluation (the boxes and
COCOeval's precision array) in ``last_evaluation``.
"""
import contextlib
from typing import Dict, Iterator, List, Optional

import mmdet.evaluation.metrics.coco_metric as mmdet_coco_metric
import numpy as np
from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.logging import print_log

from .plots import EvaluationRecord

# CocoMetric's default metric_items for the 'bbox' metric.
_ITEMS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


@contextlib.contextmanager
def _keeping_cocoeval() -> Iterator[list]:
    """Yields a list that receives each bbox COCOeval that mmdet's
    ``CocoMetric.compute_metrics`` accumulates inside the block.

    mmdet builds the COCOeval as a local of that 150-line method and drops
    it with its precision array; copying the method to keep one array would
    fork it, and evaluating again would double the evaluation time (COCO
    val: tens of seconds). So, for the duration of the call only, the two
    names that method looks up in its module are subclasses that note
    themselves after ``accumulate``. compute_metrics runs on one process
    and thread (rank 0), and the names are restored whatever happens.
    """
    kept = []
    originals = (mmdet_coco_metric.COCOeval, mmdet_coco_metric.COCOevalMP)

    def keeping(cls):

        class Keeping(cls):

            def accumulate(self, *args, **kwargs):
                super().accumulate(*args, **kwargs)
                if self.params.iouType == 'bbox' and self.params.useCats:
                    kept.append(self)

        return Keeping

    mmdet_coco_metric.COCOeval, mmdet_coco_metric.COCOevalMP = map(
        keeping, originals)
    try:
        yield kept
    finally:
        mmdet_coco_metric.COCOeval, mmdet_coco_metric.COCOevalMP = originals


@METRICS.register_module()
class ZeroIfEmptyCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric``; AP 0 for every field when no image of the
    evaluation set has a detection.

    Args:
        keep_for_plots: keep the last evaluation's boxes and COCOeval
            precision in ``last_evaluation`` (an ``EvaluationRecord``), for
            ``PlotsHook`` / ``write_plots``. ``PlotsHook`` turns it on.
        **kwargs: as ``CocoMetric``.
    """

    def __init__(self, *args, keep_for_plots: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keep_for_plots = keep_for_plots
        self.last_evaluation: Optional[EvaluationRecord] = None

    def compute_metrics(self, results: List) -> Dict[str, float]:
        if not self.keep_for_plots:
            return self._compute(results)
        with _keeping_cocoeval() as kept:
            metrics = self._compute(results)
        self.last_evaluation = self._record(results,
                                            kept[-1] if kept else None)
        return metrics

    def _record(self, results: List, coco_eval) -> EvaluationRecord:
        """The plots' inputs: ``results`` with the ground truth of each
        image as mmdet's ``CocoDataset`` loads it."""
        classes = list(self.dataset_meta['classes'])
        if self._coco_api is not None:
            cat_ids = self.cat_ids or self._coco_api.get_cat_ids(
                cat_names=classes)
            label_of = {cat: i for i, cat in enumerate(cat_ids)}
        gts, preds = [], []
        for gt, pred in results:
            if 'anns' in gt:  # no ann_file: the data samples' instances
                boxes = [
                    dict(bbox=list(a['bbox']), bbox_label=a['bbox_label'])
                    for a in gt['anns']
                ]
            else:
                boxes = []
                # CocoDataset.parse_data_info's filter (crowd boxes stay,
                # with an ignore flag the confusion tool does not read).
                for ann in self._coco_api.imgToAnns.get(gt['img_id'], []):
                    x, y, w, h = ann['bbox']
                    if (ann.get('ignore', False) or ann.get('area', w * h) <= 0
                            or w < 1 or h < 1
                            or ann['category_id'] not in label_of):
                        continue
                    boxes.append(
                        dict(
                            bbox=[x, y, x + w, y + h],
                            bbox_label=label_of[ann['category_id']]))
            gts.append(boxes)
            preds.append({k: pred[k] for k in ('bboxes', 'scores', 'labels')})
        if coco_eval is None:
            return EvaluationRecord(classes, gts, preds)
        return EvaluationRecord(
            classes,
            gts,
            preds,
            precision=np.array(coco_eval.eval['precision']),
            iou_thrs=np.array(coco_eval.params.iouThrs),
            rec_thrs=np.array(coco_eval.params.recThrs))

    def _compute(self, results: List) -> Dict[str, float]:
        num_dets = sum(len(pred['labels']) for _, pred in results)
        if num_dets or self.format_only:
            return self._over_run_images(results)
        items = self.metric_items or _ITEMS
        print_log(
            f'no detection on any of the {len(results)} evaluation images: '
            'every AP is reported as 0. The model scores no box above '
            'model.test_cfg.score_thr (an untrained or diverged model, or '
            'a threshold too high for it).',
            logger='current',
            level=30)  # logging.WARNING
        return {
            f'{metric}_{item}': 0.0
            for metric in self.metrics
            for item in items
        }

    def _over_run_images(self, results: List) -> Dict[str, float]:
        """mmdet's AP over the images in ``results`` (not every image of
        the annotation file)."""
        if self._coco_api is None or self.img_ids is not None:
            return super().compute_metrics(results)  # user-set ids
        run = {pred['img_id'] for _, pred in results}
        missing = [i for i in self._coco_api.get_img_ids() if i not in run]
        if missing:
            names = [
                self._coco_api.imgs[i].get('file_name', i)
                for i in missing[:10]
            ]
            print_log(
                f'{len(missing)} images of the annotation file were not '
                f'evaluated (excluded by the dataset) and are left out of '
                f'the AP: {", ".join(map(str, names))}' +
                (' ...' if len(missing) > 10 else ''),
                logger='current',
                level=30)
        self.img_ids = sorted(run)
        try:
            return super().compute_metrics(results)
        finally:
            self.img_ids = None
