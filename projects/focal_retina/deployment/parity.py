"""Comparisons of two detectors' outputs (the exported file vs PyTorch).

Used by ``tools/deployment/check_parity.py`` and the tests. The reference
is always mmdet on the *original* image (:func:`pytorch_reference`: the
config's test pipeline, then ``model.test_step``), whatever the file does
to its input: a fixed-size export pads every input up to its size, PyTorch
only to the ``pad_size_divisor``, and that difference is part of what is
measured. The comparisons are NumPy only; the reference imports mmcv and
torch when called.
"""
import copy
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

COORD_TOL = 1e-3  # px: boxes closer than this are the same box


def inference_pipeline(cfg) -> Any:
    """The config's test pipeline on a decoded image, without annotations
    (as mmdet's ``DetInferencer`` builds it: ``LoadImageFromNDArray``)."""
    from mmcv.transforms import Compose
    loader = cfg.get('test_dataloader') or {}
    steps = []
    for t in copy.deepcopy((loader.get('dataset') or {}).get('pipeline')
                           or cfg.get('test_pipeline')):
        kind = t['type'].split('.')[-1]
        if kind == 'LoadImageFromFile':
            t = dict(type='mmdet.LoadImageFromNDArray')
        elif kind == 'LoadAnnotations':
            continue
        steps.append(t)
    return Compose(steps)


def pytorch_reference(model: Any,
                      pipeline: Any,
                      bgr: np.ndarray,
                      img_id: int = 0,
                      img_path: Optional[str] = None
                      ) -> Tuple[Any, Dict[str, np.ndarray]]:
    """mmdet's detections of the original image: ``pipeline`` (from
    :func:`inference_pipeline`), then ``model.test_step``.

    Args:
        model: The detector in eval mode.
        pipeline: The test pipeline.
        bgr: The image as ``mmcv.imread`` returns it.
        img_id: Image id (for an evaluator).
        img_path: Image path (for an evaluator).

    Returns:
        (the ``DetDataSample``, its ``bboxes``, ``scores``, ``labels`` as
        NumPy arrays).
    """
    import torch
    data = pipeline(dict(img=bgr, img_id=img_id, img_path=img_path))
    with torch.no_grad():
        sample = model.test_step(
            dict(inputs=[data['inputs']],
                 data_samples=[data['data_samples']]))[0]
    inst = sample.pred_instances
    return sample, dict(
        bboxes=inst.bboxes.cpu().numpy(),
        scores=inst.scores.cpu().numpy(),
        labels=inst.labels.cpu().numpy())


def max_relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (0 for two empty or all-zero arrays)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f'shapes differ: {ours.shape} vs {ref.shape}')
    if ref.size == 0:
        return 0.0
    scale = np.abs(ref).max()
    diff = np.abs(ours - ref).max()
    return float(diff / scale) if scale > 0 else float(diff)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of x1 y1 x2 y2 boxes (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    union = area_a[:, None] + area_b[None] - inter
    # Degenerate (zero-area) boxes: identical ones count as IoU 1.
    same = np.all(a[:, None] == b[None], axis=-1)
    return np.where(union > 0, inter / np.where(union > 0, union, 1),
                    same.astype(np.float64))


def match_detections(ours: Dict[str, np.ndarray],
                     ref: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Pairs each reference detection with an unused one of ours of the
    same label and the highest IoU (reference order: best score first).

    Returns:
        ``count_ours``, ``count_ref``, ``unmatched`` (reference detections
        without a same-label partner), ``min_iou``, ``max_coord_diff``
        (px) and ``max_score_diff`` over the pairs (1.0 / 0.0 when there
        are none). A pair whose coordinates agree to :data:`COORD_TOL` px
        counts as IoU 1: a box clipped to a sliver at the image border
        (0.08 px wide, say) turns a float32 rounding of 1e-4 px into an IoU
        of 0.998.
    """
    n_ref, n_ours = len(ref['scores']), len(ours['scores'])
    stats = dict(
        count_ours=n_ours,
        count_ref=n_ref,
        unmatched=0,
        min_iou=1.0,
        max_coord_diff=0.0,
        max_score_diff=0.0)
    if n_ref == 0 or n_ours == 0:
        stats['unmatched'] = n_ref
        return stats
    iou = box_iou(ref['bboxes'], ours['bboxes'])
    same = np.asarray(ref['labels'])[:,
                                     None] == np.asarray(ours['labels'])[None]
    iou = np.where(same, iou, -1.0)
    used = np.zeros(n_ours, bool)
    for i in np.argsort(-np.asarray(ref['scores']), kind='stable'):
        cand = np.where(used, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] < 0:
            stats['unmatched'] += 1
            continue
        used[j] = True
        diff = float(np.abs(ref['bboxes'][i] - ours['bboxes'][j]).max())
        stats['max_coord_diff'] = max(stats['max_coord_diff'], diff)
        if diff > COORD_TOL:
            stats['min_iou'] = min(stats['min_iou'], float(cand[j]))
        stats['max_score_diff'] = max(
            stats['max_score_diff'],
            abs(float(ref['scores'][i]) - float(ours['scores'][j])))
    return stats


def detections_equal(stats: Dict[str, float],
                     min_iou: float = 0.999,
                     score_tol: float = 1e-4) -> bool:
    """The acceptance rule: same count, every reference detection paired
    with one of the same label at IoU ≥ ``min_iou``, scores within
    ``score_tol``."""
    return (stats['count_ours'] == stats['count_ref']
            and stats['unmatched'] == 0 and stats['min_iou'] >= min_iou
            and stats['max_score_diff'] <= score_tol)


def summarize(all_stats: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Totals over images: detections, reference detections without a
    partner (``unmatched``), images that differ, worst IoU and score
    difference."""
    return dict(
        images=len(all_stats),
        detections_ref=int(sum(s['count_ref'] for s in all_stats)),
        detections_ours=int(sum(s['count_ours'] for s in all_stats)),
        unmatched=int(sum(s['unmatched'] for s in all_stats)),
        images_differing=sum(not detections_equal(s) for s in all_stats),
        min_iou=min([s['min_iou'] for s in all_stats] or [1.0]),
        max_score_diff=max([s['max_score_diff'] for s in all_stats] or [0]))
