"""Writes the evaluation plots (per-class precision-recall curves, confusion
matrix with a background row and column: ``evaluation/plots.py``) at the end
of training, from the last validation, and after a test run when asked.

The plots come from the predictions the evaluator already scored: the hook
only asks the ``ZeroIfEmptyCocoMetric`` of the loop to keep its last
evaluation (``keep_for_plots``), so no extra inference pass runs. The last
validation is that of the final weights (mmengine validates after the last
iteration, and ``TrainTimeBudgetHook`` keeps that validation); for the best
checkpoint, ``tools/test.py BEST.pth --plots DIR``.
"""
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..evaluation.coco_metric import ZeroIfEmptyCocoMetric
from ..evaluation.plots import write_plots


def _plot_metric(evaluator) -> Optional[ZeroIfEmptyCocoMetric]:
    """The evaluator's first ``ZeroIfEmptyCocoMetric``, if any."""
    for metric in getattr(evaluator, 'metrics', []):
        if isinstance(metric, ZeroIfEmptyCocoMetric):
            return metric
    return None


@HOOKS.register_module()
class PlotsHook(Hook):
    """Evaluation plots at the end of training and/or of a test run.

    Args:
        out_dir: the folder of the end-of-training plots, relative to the
            work dir (an absolute path stays). Defaults to ``'plots'``.
        after_train: write them at the end of training, from the last
            validation. Defaults to True.
        test_out_dir: if set, the test run's plots go there (``tools/test.py
            --plots DIR`` sets it).
        score_thr: the confusion matrix's score threshold (mmdet's tool's
            default). Defaults to 0.3.
        tp_iou_thr: the IoU at which a detection matches a ground-truth box
            in the confusion matrix. Defaults to 0.5.
    """

    priority = 'LOW'

    def __init__(self,
                 out_dir: str = 'plots',
                 after_train: bool = True,
                 test_out_dir: Optional[str] = None,
                 score_thr: float = 0.3,
                 tp_iou_thr: float = 0.5) -> None:
        self.out_dir = out_dir
        self.write_after_train = after_train
        self.test_out_dir = test_out_dir
        self.score_thr = score_thr
        self.tp_iou_thr = tp_iou_thr
        self._warned = set()

    def _keep(self, evaluator, split: str) -> None:
        metric = _plot_metric(evaluator)
        if metric is not None:
            metric.keep_for_plots = True
        elif split not in self._warned:
            self._warned.add(split)
            print_log(
                f'PlotsHook: {split}_evaluator has no ZeroIfEmptyCocoMetric '
                '(the COCO metric that keeps its evaluation): no plots',
                logger='current',
                level=30)  # logging.WARNING

    def before_val(self, runner) -> None:
        if self.write_after_train:
            self._keep(runner.val_evaluator, 'val')

    def before_test(self, runner) -> None:
        if self.test_out_dir:
            self._keep(runner.test_evaluator, 'test')

    def _write(self, evaluator, out_dir: str, what: str) -> None:
        if not is_main_process():  # only rank 0 computes the metrics
            return
        metric = _plot_metric(evaluator)
        record = metric and metric.last_evaluation
        if record is None:
            print_log(
                f'PlotsHook: no evaluation to plot after {what}',
                logger='current',
                level=30)
            return
        written = write_plots(record, out_dir, self.score_thr, self.tp_iou_thr)
        note = '' if 'pr_curves.png' in written else (
            ' (no detection at all: no precision-recall curves)')
        print_log(
            f'plots of the {what}: {", ".join(sorted(written))} in '
            f'{out_dir}{note}',
            logger='current')

    def after_train(self, runner) -> None:
        if not self.write_after_train:
            return
        if runner.val_loop is None:
            print_log(
                'PlotsHook: training ran no validation: no plots',
                logger='current',
                level=30)
            return
        self._write(runner.val_evaluator,
                    osp.join(runner.work_dir, self.out_dir), 'last validation')

    def after_test_epoch(self, runner, metrics=None) -> None:
        if self.test_out_dir:
            self._write(runner.test_evaluator, self.test_out_dir, 'test')
