"""Detection on images larger than the training size, by overlapping tiles.

Aerial and microscope photos are often several times the size a detector
was trained at; resizing them down makes their objects too small for the
P3 anchors. Instead the image is cut into overlapping windows, each window
runs through the detector at its own scale, the boxes are shifted back into
image coordinates and merged.

Merging follows mmdet's large-image demo (``mmdet.utils.large_image.
merge_results_by_nms``: shift each window's boxes by its offset, then
class-wise ``batched_nms``). Its helpers are not called: they import the
``sahi`` package only to add the offsets, a dependency with its own OpenCV
and Shapely builds for two lines. One step is added before NMS: a box cut
by a window's *inner* edge (an edge that is not the image border) is the
truncated view of an object that a neighbouring window sees whole. Its
IoU with the whole box is only the visible fraction (0.5 for an object cut
in half), so NMS at 0.5 would keep both. Such a cut box is dropped when a
box of the same class from another window contains most of it
(intersection over the cut box's area ≥ ``contain_thr``), and the box
that absorbs it keeps the better of the two scores (a window may see the
cut piece with more confidence than the whole view: the object must not
fall under the score threshold for it). Objects larger than the overlap,
seen whole in no window, keep their cut pieces and NMS merges what it can.
"""
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
from mmcv.ops import batched_nms
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import Tensor

Window = Tuple[int, int, int, int]  # x0, y0, x1, y1 (pixels, x1/y1 excl.)


def _starts(size: int, tile: int, overlap: float) -> List[int]:
    """Window starts along one axis: a stride of ``tile * (1 - overlap)``
    (rounded down, so neighbours overlap by at least ``overlap * tile``),
    the last window flush with the border."""
    if size <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    return list(range(0, size - tile, stride)) + [size - tile]


def tile_windows(height: int, width: int, tile: int,
                 overlap: float) -> List[Window]:
    """Windows of at most ``tile`` × ``tile`` px covering the image.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        tile: Window side in pixels (> 0).
        overlap: Fraction of ``tile`` that neighbouring windows share,
            in [0, 1).

    Returns:
        ``(x0, y0, x1, y1)`` per window, row-major.
    """
    if tile <= 0:
        raise ValueError(f'tile={tile}: expected a positive window size')
    if not 0 <= overlap < 1:
        raise ValueError(f'overlap={overlap}: expected a value in [0, 1)')
    return [(x0, y0, min(x0 + tile, width), min(y0 + tile, height))
            for y0 in _starts(height, tile, overlap)
            for x0 in _starts(width, tile, overlap)]


def _cut_by_inner_edge(bboxes: Tensor, window: Window, height: int, width: int,
                       margin: float) -> Tensor:
    """(n,) bool: boxes (window coordinates) touching an edge of the window
    that lies inside the image."""
    x0, y0, x1, y1 = window
    w, h = x1 - x0, y1 - y0
    cut = torch.zeros(len(bboxes), dtype=torch.bool, device=bboxes.device)
    if x0 > 0:
        cut |= bboxes[:, 0] <= margin
    if y0 > 0:
        cut |= bboxes[:, 1] <= margin
    if x1 < width:
        cut |= bboxes[:, 2] >= w - margin
    if y1 < height:
        cut |= bboxes[:, 3] >= h - margin
    return cut


def _absorb(bboxes: Tensor, scores: Tensor, labels: Tensor, window_ids: Tensor,
            cut: Tensor, contain_thr: float) -> Tuple[Tensor, Tensor]:
    """Drops the cut boxes mostly inside (intersection / the cut box's
    area ≥ ``contain_thr``) a same-class box of another window that is a
    whole view or larger, and hands their scores on.

    A dropped box is taken for a partial view of the same object, so the
    box that absorbs it (of those containing it, the one of highest IoU,
    the first on ties) keeps the higher of the two scores: a confident
    truncated view must not be lost behind a doubtful whole one (cut 0.9,
    whole 0.3 would otherwise come out at 0.3, under a 0.5 threshold).

    Returns:
        ``(drop, scores)``: (n,) bool, and the scores after absorption
        (a new tensor; the inputs are not changed).
    """
    drop = torch.zeros_like(cut)
    scores = scores.clone()
    area = ((bboxes[:, 2] - bboxes[:, 0]) *
            (bboxes[:, 3] - bboxes[:, 1])).clamp(min=1e-6)
    # Smallest first: a box absorbed into a larger cut box that is itself
    # absorbed later passes its score on along the chain.
    order = torch.argsort(area, stable=True)
    for i in order[cut[order]].tolist():
        others = (labels == labels[i]) & (window_ids != window_ids[i])
        if not others.any():
            continue
        idx = torch.nonzero(others).flatten()
        box, cand = bboxes[i], bboxes[idx]
        iw = (torch.minimum(cand[:, 2], box[2]) -
              torch.maximum(cand[:, 0], box[0])).clamp(min=0)
        ih = (torch.minimum(cand[:, 3], box[3]) -
              torch.maximum(cand[:, 1], box[1])).clamp(min=0)
        inter = iw * ih
        # Only a whole view (a box not cut by its window) or a larger cut
        # box absorbs it; equal cut boxes never drop each other, so an
        # object is never lost. A larger cut box is absorbed after this
        # one (smallest first), a whole view never.
        cand_area = area[idx]
        whole = ~cut[idx] & (cand_area >= area[i])
        inside = (inter / area[i] >= contain_thr) & (
            whole | (cand_area > area[i]))
        if not inside.any():
            continue
        iou = inter / (area[i] + cand_area - inter)
        iou[~inside] = -1
        j = idx[int(torch.argmax(iou))]
        drop[i] = True
        scores[j] = torch.maximum(scores[j], scores[i])
    return drop, scores


def _shifted(inst: InstanceData, window: Window) -> InstanceData:
    """The instances with their boxes moved from window to image pixels."""
    x0, y0 = window[:2]
    out = inst.clone()
    out.bboxes = inst.bboxes + inst.bboxes.new_tensor([x0, y0, x0, y0])
    return out


def merge_tiles(samples: Sequence[DetDataSample],
                windows: Sequence[Window],
                image_shape: Tuple[int, int],
                nms_iou: float = 0.5,
                contain_thr: float = 0.8,
                edge_margin: float = 2.0) -> DetDataSample:
    """The detections of every window as one image's detections.

    Args:
        samples: One prediction per window (boxes in window pixels).
        windows: The windows, as :func:`tile_windows` returns them.
        image_shape: ``(height, width)`` of the whole image.
        nms_iou: IoU threshold of the class-wise NMS over all windows.
        contain_thr: A box cut by an inner window edge is dropped when this
            fraction of it lies inside a larger same-class box of another
            window; that box keeps the higher of the two scores.
        edge_margin: Pixels from a window edge that count as touching it.

    Returns:
        A copy of the first sample whose ``pred_instances`` are the merged
        detections in image pixels, best first.
    """
    height, width = image_shape
    cut, window_ids = [], []
    for k, (sample, win) in enumerate(zip(samples, windows)):
        boxes = sample.pred_instances.bboxes
        cut.append(_cut_by_inner_edge(boxes, win, height, width, edge_margin))
        window_ids.append(torch.full((len(boxes), ), k, dtype=torch.long))
    inst = InstanceData.cat([
        _shifted(sample.pred_instances, win)
        for sample, win in zip(samples, windows)
    ])
    cut_t, ids = torch.cat(cut), torch.cat(window_ids).to(inst.labels.device)
    drop, inst.scores = _absorb(inst.bboxes, inst.scores, inst.labels, ids,
                                cut_t, contain_thr)
    inst = inst[~drop]
    merged = samples[0].clone()
    if len(inst):
        _, kept = batched_nms(inst.bboxes, inst.scores, inst.labels,
                              dict(type='nms', iou_threshold=nms_iou))
        inst = inst[kept]
    merged.pred_instances = inst
    merged.set_metainfo(dict(ori_shape=image_shape, img_shape=image_shape))
    return merged


def detect_tiled(detect: Callable[[np.ndarray], DetDataSample],
                 image: np.ndarray,
                 tile: int,
                 overlap: float = 0.2,
                 nms_iou: float = 0.5) -> DetDataSample:
    """Runs ``detect`` on overlapping windows of ``image`` and merges them.

    Args:
        detect: Maps an (h, w, 3) image crop to its ``DetDataSample``
            (boxes in crop pixels), e.g. a DetInferencer call.
        image: (H, W, 3) image, as ``detect`` expects it (BGR for mmdet).
        tile: Window side in pixels.
        overlap: Fraction of ``tile`` shared by neighbouring windows; an
            object smaller than ``overlap * tile`` is seen whole in some
            window.
        nms_iou: IoU threshold of the merging NMS.
    """
    height, width = image.shape[:2]
    windows = tile_windows(height, width, tile, overlap)
    samples = [
        detect(np.ascontiguousarray(image[y0:y1, x0:x1]))
        for x0, y0, x1, y1 in windows
    ]
    return merge_tiles(samples, windows, (height, width), nms_iou)
