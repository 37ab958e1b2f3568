"""RetinaNet post-processing in NumPy, step for step as mmdet 3.3 does it.

The exported graph ends at the head's raw outputs; this module turns them
into detections without torch or mmcv, following
``BaseDenseHead.predict_by_feat`` → ``_predict_by_feat_single`` →
``_bbox_post_process`` with the config's ``test_cfg``:

1. per level: sigmoid, ``filter_scores_and_topk`` (scores > ``score_thr``
   over every (anchor, class) pair, then the ``nms_pre`` best);
2. ``DeltaXYWHBBoxCoder.decode`` of the kept anchors (the coder's means,
   stds, ``wh_ratio_clip``, centre clamp, clipping to ``img_shape``);
3. rescale to the original image (÷ ``scale_factor``), ``min_bbox_size``;
4. mmcv's ``batched_nms`` (the class-offset trick, ``split_thr``), then
   ``max_per_img``.

Every step is computed in float32 with the operations in mmdet's order, so
that ties and clipping fall the same way. The parameters come from the
``.onnx`` metadata (``head`` and ``test_cfg``), which the exporter reads
from the built model and the config; nothing is restated here.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

Detections = Dict[str, np.ndarray]  # bboxes (n, 4), scores (n,), labels (n,)
NMS_KEYS = ('type', 'iou_threshold', 'class_agnostic', 'split_thr', 'offset',
            'score_threshold', 'max_num')


def empty_detections() -> Detections:
    return dict(
        bboxes=np.zeros((0, 4), np.float32),
        scores=np.zeros((0, ), np.float32),
        labels=np.zeros((0, ), np.int64))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 sigmoid without overflow warnings for large negatives."""
    x = x.astype(np.float32, copy=False)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1 + ex)
    return out


def grid_anchors(base_anchors: np.ndarray, stride: Sequence[float],
                 feat_h: int, feat_w: int) -> np.ndarray:
    """``AnchorGenerator.single_level_grid_priors`` of one level.

    Args:
        base_anchors: (A, 4) anchors of the level centred at the origin.
        stride: (stride_w, stride_h) of the level.
        feat_h: Feature map height.
        feat_w: Feature map width.

    Returns:
        (feat_h * feat_w * A, 4) float32 anchors, position-major (row by
        row), the A anchors of a position consecutive.
    """
    base = np.asarray(base_anchors, np.float32)
    shift_x = np.arange(feat_w, dtype=np.float32) * np.float32(stride[0])
    shift_y = np.arange(feat_h, dtype=np.float32) * np.float32(stride[1])
    xx = np.tile(shift_x, feat_h)
    yy = np.repeat(shift_y, feat_w)
    shifts = np.stack([xx, yy, xx, yy], axis=-1)
    return (base[None] + shifts[:, None]).reshape(-1, 4)


def filter_scores_and_topk(scores: np.ndarray, score_thr: float,
                           topk: int) -> Tuple[np.ndarray, ...]:
    """mmdet's ``filter_scores_and_topk``: (anchor, class) pairs scoring
    above ``score_thr``, the ``topk`` best (Python slicing, so a negative
    ``topk`` drops from the end exactly as mmdet does).

    Args:
        scores: (N, K) scores of one level.

    Returns:
        scores (n,), labels (n,), anchor indices (n,), best first.
    """
    valid = scores > np.float32(score_thr)
    rows, cols = np.nonzero(valid)  # row-major, as torch.nonzero
    vals = scores[rows, cols]
    order = np.argsort(-vals, kind='stable')[:min(topk, len(vals))]
    return vals[order], cols[order].astype(np.int64), rows[order]


def delta2bbox(rois: np.ndarray, deltas: np.ndarray, coder: dict,
               max_shape: Sequence[int]) -> np.ndarray:
    """``DeltaXYWHBBoxCoder.decode`` (mmdet's ``delta2bbox``).

    Args:
        rois: (n, 4) anchors x1, y1, x2, y2.
        deltas: (n, 4) raw box outputs dx, dy, dw, dh.
        coder: ``means``, ``stds``, ``wh_ratio_clip``, ``clip_border``,
            ``add_ctr_clamp``, ``ctr_clamp`` of the model's coder.
        max_shape: (h, w) of the resized, unpadded image (clip bounds).

    Returns:
        (n, 4) float32 boxes in the resized image.
    """
    if len(deltas) == 0:
        return deltas.astype(np.float32)
    means = np.asarray(coder['means'], np.float32)[None]
    stds = np.asarray(coder['stds'], np.float32)[None]
    denorm = deltas * stds + means
    dxy, dwh = denorm[:, :2], denorm[:, 2:]
    pxy = (rois[:, :2] + rois[:, 2:]) * np.float32(0.5)
    pwh = rois[:, 2:] - rois[:, :2]
    dxy_wh = pwh * dxy
    max_ratio = np.float32(np.abs(np.log(coder['wh_ratio_clip'])))
    if coder.get('add_ctr_clamp', False):
        ctr = np.float32(coder['ctr_clamp'])
        dxy_wh = np.clip(dxy_wh, -ctr, ctr)
        dwh = np.minimum(dwh, max_ratio)
    else:
        dwh = np.clip(dwh, -max_ratio, max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * np.exp(dwh)
    half = gwh * np.float32(0.5)
    bboxes = np.concatenate([gxy - half, gxy + half], axis=-1)
    if coder.get('clip_border', True) and max_shape is not None:
        bboxes[:, 0::2] = np.clip(bboxes[:, 0::2], 0, max_shape[1])
        bboxes[:, 1::2] = np.clip(bboxes[:, 1::2], 0, max_shape[0])
    return bboxes.astype(np.float32, copy=False)


def nms(boxes: np.ndarray,
        scores: np.ndarray,
        iou_threshold: float,
        offset: int = 0,
        score_threshold: float = 0,
        max_num: int = -1,
        limit: int = 0) -> np.ndarray:
    """Greedy NMS as mmcv's CPU kernel (``nms_cpu``): sort by score, drop
    every later box whose IoU with a kept one is > ``iou_threshold``.
    ``limit`` > 0 stops after that many kept boxes: the kept boxes come out
    best first, so the first ``limit`` are the same either way (what
    ``max_per_img`` keeps), at a fraction of the cost.

    Returns:
        Indices of the kept boxes, best first.
    """
    valid = None
    if score_threshold > 0:
        valid = np.nonzero(scores > np.float32(score_threshold))[0]
        boxes, scores = boxes[valid], scores[valid]
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    off = np.float32(offset)
    areas = (x2 - x1 + off) * (y2 - y1 + off)
    order = np.argsort(-scores, kind='stable')
    thr = np.float32(iou_threshold)
    suppressed = np.zeros(len(order), bool)
    keep = []
    for n, i in enumerate(order):
        if suppressed[n]:
            continue
        if 0 < limit <= len(keep):
            break
        keep.append(i)
        rest = order[n + 1:]
        w = np.maximum(
            np.float32(0),
            np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + off)
        h = np.maximum(
            np.float32(0),
            np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + off)
        inter = w * h
        # Two zero-area boxes (clipped to a border) give 0 / 0: NaN, which
        # is not > thr and suppresses nothing, as in mmcv's kernel; only
        # NumPy's warning about it is silenced.
        with np.errstate(divide='ignore', invalid='ignore'):
            iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[n + 1:] |= iou > thr
    keep = np.asarray(keep, np.int64)
    if max_num > 0:
        keep = keep[:max_num]
    return valid[keep] if valid is not None else keep


def batched_nms(boxes: np.ndarray,
                scores: np.ndarray,
                idxs: np.ndarray,
                nms_cfg: dict,
                limit: int = 0) -> np.ndarray:
    """mmcv's ``batched_nms``: class-wise NMS by offsetting each class's
    boxes by ``label * (max coordinate + 1)`` (per-class NMS without the
    offset above ``split_thr`` boxes); ``limit`` as for :func:`nms`.

    Returns:
        Indices of the kept boxes, best first.
    """
    cfg = dict(nms_cfg)
    unknown = sorted(set(cfg) - set(NMS_KEYS))
    nms_type = cfg.pop('type', 'nms')
    if nms_type != 'nms' or unknown:
        raise ValueError(f'test_cfg.nms={nms_cfg}: only plain nms with '
                         f'{NMS_KEYS} is supported')
    if cfg.pop('class_agnostic', False):
        boxes_for_nms = boxes
    else:
        offsets = idxs.astype(np.float32) * (boxes.max() + np.float32(1))
        boxes_for_nms = boxes + offsets[:, None]
    split_thr = cfg.pop('split_thr', 10000)
    if len(boxes_for_nms) < split_thr:
        return nms(boxes_for_nms, scores, **cfg, limit=limit)
    max_num = cfg.pop('max_num', -1)
    kept = np.zeros(len(scores), bool)
    for label in np.unique(idxs):
        members = np.nonzero(idxs == label)[0]
        kept[members[nms(boxes_for_nms[members], scores[members],
                         **cfg)]] = True
    keep = np.nonzero(kept)[0]
    keep = keep[np.argsort(-scores[keep], kind='stable')]
    return keep[:max_num] if max_num > 0 else keep


def predict_single(cls_scores: Sequence[np.ndarray],
                   bbox_preds: Sequence[np.ndarray],
                   img_meta: dict,
                   head: dict,
                   test_cfg: dict,
                   rescale: bool = True) -> Detections:
    """Detections of one image (mmdet's ``_predict_by_feat_single`` and
    ``_bbox_post_process``).

    Args:
        cls_scores: Per level (A*K, H, W) classification logits.
        bbox_preds: Per level (A*4, H, W) box regression outputs.
        img_meta: ``img_shape`` (h, w) of the resized image and, for
            ``rescale``, its ``scale_factor`` (w_scale, h_scale).
        head: ``num_classes``, ``base_anchors``, ``strides``, ``bbox_coder``.
        test_cfg: The config's ``model.test_cfg``.
        rescale: Return boxes in original-image pixels.

    Returns:
        ``bboxes`` (n, 4) x1 y1 x2 y2, ``scores`` (n,), ``labels`` (n,),
        best first, at most ``max_per_img``.
    """
    num_classes = head['num_classes']
    nms_pre = test_cfg.get('nms_pre', -1)
    score_thr = test_cfg.get('score_thr', 0)
    scores_, labels_, deltas_, anchors_ = [], [], [], []
    for level, (cls, box) in enumerate(zip(cls_scores, bbox_preds)):
        feat_h, feat_w = cls.shape[-2:]
        deltas = box.transpose(1, 2, 0).reshape(-1, 4)
        scores = sigmoid(cls.transpose(1, 2, 0).reshape(-1, num_classes))
        scores, labels, keep = filter_scores_and_topk(scores, score_thr,
                                                      nms_pre)
        anchors = grid_anchors(head['base_anchors'][level],
                               head['strides'][level], feat_h, feat_w)
        scores_.append(scores)
        labels_.append(labels)
        deltas_.append(deltas[keep])
        anchors_.append(anchors[keep])
    bboxes = delta2bbox(
        np.concatenate(anchors_), np.concatenate(deltas_), head['bbox_coder'],
        img_meta['img_shape'])
    scores, labels = np.concatenate(scores_), np.concatenate(labels_)
    if rescale:
        sw, sh = img_meta['scale_factor'][:2]
        bboxes = bboxes * np.array([1 / sw, 1 / sh] * 2, np.float32)
    min_size = test_cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        w, h = bboxes[:, 2] - bboxes[:, 0], bboxes[:, 3] - bboxes[:, 1]
        valid = (w > min_size) & (h > min_size)
        bboxes, scores, labels = bboxes[valid], scores[valid], labels[valid]
    if len(bboxes) == 0:
        return empty_detections()
    max_per_img = test_cfg.get('max_per_img', len(scores))
    keep = batched_nms(
        bboxes, scores, labels, test_cfg['nms'], limit=max_per_img)
    keep = keep[:max_per_img]
    return dict(bboxes=bboxes[keep], scores=scores[keep], labels=labels[keep])


def predict_by_feat(cls_scores: Sequence[np.ndarray],
                    bbox_preds: Sequence[np.ndarray],
                    img_metas: Sequence[dict],
                    head: dict,
                    test_cfg: dict,
                    rescale: bool = True) -> List[Detections]:
    """:func:`predict_single` for each image of a batch.

    Args:
        cls_scores: Per level (B, A*K, H, W) logits (the graph's outputs).
        bbox_preds: Per level (B, A*4, H, W) box outputs.
        img_metas: One dict per image (see :func:`predict_single`).
    """
    return [
        predict_single([c[i] for c in cls_scores], [b[i] for b in bbox_preds],
                       meta, head, test_cfg, rescale)
        for i, meta in enumerate(img_metas)
    ]
