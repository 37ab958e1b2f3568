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
"""
from typing import Dict, List

from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.logging import print_log

# CocoMetric's default metric_items for the 'bbox' metric.
_ITEMS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


@METRICS.register_module()
class ZeroIfEmptyCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric``; AP 0 for every field when no image of the
    evaluation set has a detection (arguments as ``CocoMetric``)."""

    def compute_metrics(self, results: List) -> Dict[str, float]:
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
