"""The plots a practitioner reads after an evaluation: per-class
precision-recall curves and a confusion matrix with a background row and
column, written as PNG images with their numbers beside them.

Both are built on what mmdet and pycocotools already compute:

* The curves are COCOeval's own ``eval['precision']`` array (IoU threshold
  x 101 recall points x class x area range x max detections), the one
  behind the AP table, kept by ``ZeroIfEmptyCocoMetric(keep_for_plots=True)``
  from the evaluation that printed the table; nothing is re-evaluated. Each
  class is drawn at IoU 0.50 and as the mean over IoU 0.50:0.95 (all areas,
  the last ``maxDets``: the curves whose means are that class's AP_50 and
  AP in the classwise table).
* The matrix is counted by mmdet's ``tools/analysis_tools/confusion_matrix
  .py`` (``analyze_per_img_dets``) and drawn by its
  ``plot_confusion_matrix``. Its rules (mmdet's, kept as they are):

  - detections scoring below ``score_thr`` (0.3, the tool's default) are
    dropped;
  - a kept detection adds 1 to cell (GT class, detected class) for *every*
    ground-truth box it overlaps with IoU >= ``tp_iou_thr`` (0.5), whatever
    the classes, so a same-class duplicate is counted on the diagonal again
    and a box over two objects counts twice;
  - a kept detection overlapping no ground truth that much adds 1 to
    (background, detected class): a false positive on background;
  - a ground-truth box that no kept detection *of its class* overlaps adds
    1 to (GT class, background): a miss. A box found only under the wrong
    class is therefore counted twice, in (GT class, wrong class) and in
    (GT class, background);
  - every annotation the dataset would load counts (crowd boxes too, as in
    mmdet's tool); (background, background) stays 0.

  The image shows each row as percentages of its sum (mmdet's drawing); the
  counts themselves go to ``confusion_matrix.json``.
"""
import csv
import importlib.util
import json
import os
import os.path as osp
import sys
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Dict, List, Optional, Sequence

import matplotlib
import numpy as np
import torch

#: The file names written into the plots folder.
CONFUSION_PNG = 'confusion_matrix.png'
CONFUSION_JSON = 'confusion_matrix.json'
PR_PNG = 'pr_curves.png'
PR_CSV = 'pr_curves.csv'

_TOOL = ('tools', 'analysis_tools', 'confusion_matrix.py')
_tool_module: Optional[ModuleType] = None


def mmdet_confusion_matrix_tool() -> ModuleType:
    """mmdet's ``tools/analysis_tools/confusion_matrix.py`` as a module.

    mmdet keeps its tools outside the ``mmdet`` package: a pip install puts
    them in ``mmdet/.mim/tools/`` (a folder whose leading dot makes it no
    importable package), a source checkout beside ``mmdet/``. So the file
    is loaded by path, from whichever of the two exists, instead of copying
    its counting and drawing here.

    Raises:
        ImportError: neither place has the file.
    """
    global _tool_module
    if _tool_module is not None:
        return _tool_module
    import mmdet
    pkg = osp.dirname(mmdet.__file__)
    places = [
        osp.join(pkg, '.mim', *_TOOL),
        osp.join(osp.dirname(pkg), *_TOOL)
    ]
    path = next((p for p in places if osp.isfile(p)), None)
    if path is None:
        raise ImportError('mmdet\'s confusion-matrix tool is not installed: '
                          f'looked for {" and ".join(places)}')
    # Agg unless a backend was already chosen (a notebook keeps its own):
    # the tool imports pyplot, and the plots are only ever saved to files.
    if 'matplotlib.pyplot' not in sys.modules:
        matplotlib.use('Agg')
    spec = importlib.util.spec_from_file_location(
        'mmdet_tools_confusion_matrix', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _tool_module = module
    return module


@dataclass
class EvaluationRecord:
    """What one COCO evaluation leaves for the plots.

    Attributes:
        classes: the class names, in label order.
        gts: per image, its ground-truth boxes as mmdet's dataset gives
            them: ``{'bbox': [x1, y1, x2, y2], 'bbox_label': int}``.
        preds: per image (same order), ``bboxes`` (N, 4) x1y1x2y2,
            ``scores`` (N,) and ``labels`` (N,) arrays.
        precision: COCOeval's ``eval['precision']`` (T, R, K, A, M), or
            None when nothing was evaluated (no detection at all).
        iou_thrs: COCOeval's ``params.iouThrs`` (T,).
        rec_thrs: COCOeval's ``params.recThrs`` (R,).
    """
    classes: Sequence[str]
    gts: List[List[dict]]
    preds: List[dict]
    precision: Optional[np.ndarray] = None
    iou_thrs: Optional[np.ndarray] = None
    rec_thrs: Optional[np.ndarray] = None


def confusion_matrix(gts: Sequence[Sequence[dict]],
                     preds: Sequence[dict],
                     num_classes: int,
                     score_thr: float = 0.3,
                     tp_iou_thr: float = 0.5) -> np.ndarray:
    """Counts (num_classes + 1) x (num_classes + 1): rows ground truth,
    columns detections, the last of each background; mmdet's
    ``analyze_per_img_dets`` on each image (the rules in the module doc).

    mmdet's ``calculate_confusion_matrix`` loops the same function over a
    dataset object and draws a progress bar; the per-image call takes the
    evaluator's boxes directly.
    """
    tool = mmdet_confusion_matrix_tool()
    matrix = np.zeros((num_classes + 1, num_classes + 1))
    if len(gts) != len(preds):
        raise ValueError(f'{len(gts)} images of ground truth but '
                         f'{len(preds)} of detections')
    for img_gts, pred in zip(gts, preds):
        result = {
            key: torch.as_tensor(np.asarray(pred[key]))
            for key in ('bboxes', 'scores', 'labels')
        }
        tool.analyze_per_img_dets(matrix, list(img_gts), result, score_thr,
                                  tp_iou_thr)
    return matrix.astype(np.int64)


def pr_curves(precision: np.ndarray,
              iou_thrs: Sequence[float]) -> Dict[str, np.ndarray]:
    """Per-class precision at COCOeval's recall points.

    Args:
        precision: COCOeval's ``eval['precision']`` (T, R, K, A, M).
        iou_thrs: its ``params.iouThrs`` (T,); 0.5 must be among them.

    Returns:
        ``iou50`` and ``iou50_95`` (K, R): area range 'all' (index 0) and
        the last max-detections setting, as mmdet's classwise AP reads
        them; ``iou50_95`` is the mean over the IoU thresholds. A class
        without ground truth (COCOeval's -1) is NaN.
    """
    iou_thrs = np.asarray(iou_thrs, dtype=float)
    at50 = np.flatnonzero(np.isclose(iou_thrs, 0.5))
    if not at50.size:
        raise ValueError(f'IoU 0.5 is not among {iou_thrs.tolist()}')
    p = np.asarray(precision, dtype=float)[:, :, :, 0, -1]  # (T, R, K)
    p = np.where(p > -1, p, np.nan)
    return dict(iou50=p[at50[0]].T, iou50_95=p.mean(axis=0).T)


def _curve_ap(curve: np.ndarray) -> float:
    """COCO's AP of one curve: the mean precision over the recall points."""
    return float(np.mean(curve)) if not np.isnan(curve).any() else float('nan')


def plot_pr_curves(curves: Dict[str, np.ndarray], rec_thrs: Sequence[float],
                   classes: Sequence[str], path: str) -> None:
    """One grid image: a panel per class, precision against recall at IoU
    0.50 and averaged over IoU 0.50:0.95, with each curve's AP."""
    from matplotlib.figure import Figure  # no pyplot state, no backend
    num = len(classes)
    ncols = min(num, 4)
    nrows = -(-num // ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.2 * nrows + 0.4), dpi=110)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for k, name in enumerate(classes):
        ax = axes[k]
        for key, label, style in (('iou50', 'IoU 0.50', '-'),
                                  ('iou50_95', 'IoU 0.50:0.95 mean', '--')):
            curve = curves[key][k]
            if np.isnan(curve).all():
                continue
            ax.plot(
                rec_thrs,
                curve,
                style,
                label=f'{label} (AP {_curve_ap(curve):.3f})')
        if np.isnan(curves['iou50'][k]).all():
            ax.text(0.5, 0.5, 'no ground truth', ha='center', va='center')
        else:
            ax.legend(loc='lower left', fontsize=8)
        ax.set_title(name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel('recall')
        ax.set_ylabel('precision')
        ax.grid(alpha=0.3)
    for ax in axes[num:]:
        ax.set_visible(False)
    fig.suptitle('Precision-recall per class (COCOeval, all areas)')
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str],
                   score_thr: float, tp_iou_thr: float, path: str) -> None:
    """mmdet's ``plot_confusion_matrix`` (rows in percent), at a size that
    fits its title and labels, saved to ``path``."""
    tool = mmdet_confusion_matrix_tool()
    plt = tool.plt
    labels = list(classes) + ['background']
    # An empty row divides by 0 (mmdet prints it as -1%); mmdet's own
    # tight_layout at its small size warns before the figure is resized.
    with np.errstate(invalid='ignore', divide='ignore'), \
            warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        tool.plot_confusion_matrix(
            matrix.astype(float),
            labels,
            save_dir=None,
            show=False,
            title=f'% of each row (score >= {score_thr:g}, '
            f'IoU >= {tp_iou_thr:g});\ncounts in {CONFUSION_JSON}')
    fig = plt.gcf()
    # mmdet sizes it 0.5 inch per label: too small for a few classes.
    side = max(5.0, 0.6 * len(labels) + 2.0)
    fig.set_size_inches(side, 0.85 * side)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(record: EvaluationRecord,
                out_dir: str,
                score_thr: float = 0.3,
                tp_iou_thr: float = 0.5) -> Dict[str, str]:
    """Writes the confusion matrix (PNG and JSON counts) and, when COCOeval
    ran, the PR curves (PNG and CSV points) into ``out_dir``.

    Returns:
        The paths written, by file name.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    classes = list(record.classes)
    matrix = confusion_matrix(record.gts, record.preds, len(classes),
                              score_thr, tp_iou_thr)
    path = osp.join(out_dir, CONFUSION_PNG)
    plot_confusion(matrix, classes, score_thr, tp_iou_thr, path)
    written[CONFUSION_PNG] = path
    path = osp.join(out_dir, CONFUSION_JSON)
    with open(path, 'w') as f:
        json.dump(
            dict(
                labels=classes + ['background'],
                rows='ground truth',
                columns='detections',
                counts=matrix.tolist(),
                score_thr=score_thr,
                tp_iou_thr=tp_iou_thr,
                images=len(record.gts)),
            f,
            indent=1)
    written[CONFUSION_JSON] = path
    if record.precision is None:
        return written  # no detection anywhere: COCOeval did not run
    curves = pr_curves(record.precision, record.iou_thrs)
    path = osp.join(out_dir, PR_PNG)
    plot_pr_curves(curves, record.rec_thrs, classes, path)
    written[PR_PNG] = path
    path = osp.join(out_dir, PR_CSV)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(
            ['class', 'recall', 'precision_iou50', 'precision_iou50_95'])
        for k, name in enumerate(classes):
            for r, recall in enumerate(record.rec_thrs):
                writer.writerow([
                    name, f'{recall:.2f}', f'{curves["iou50"][k, r]:.6f}',
                    f'{curves["iou50_95"][k, r]:.6f}'
                ])
    written[PR_CSV] = path
    return written
