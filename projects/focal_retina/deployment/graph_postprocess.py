"""RetinaNet post-processing as traceable torch ops (``--with-postprocess``).

The same steps as :mod:`projects.focal_retina_runtime.postprocess` (mmdet's
``predict_by_feat``), in a form the TorchScript-based ONNX exporter turns
into a graph whose image size and batch stay dynamic (from opset 10):

* ``filter_scores_and_topk`` with a *static* k: each level's flattened
  scores are padded with ``nms_pre`` entries of -1 before ``TopK(nms_pre)``,
  so k never exceeds the number of (anchor, class) pairs, whatever the
  input size; a pair is valid when its score is > ``score_thr`` (the top k
  of all pairs, restricted to the valid ones, are the top k valid ones);
* anchors are computed only for the kept indices, from the level's width
  (a ``Shape`` op) and the model's base anchors and strides;
* decoding, clipping to ``img_shapes``, rescaling by ``scale_factors`` and
  ``min_bbox_size`` as mmdet; invalid candidates get score -1;
* class-wise NMS with mmcv's offset trick (each label's boxes shifted by
  ``label * (max valid coordinate + 1)``), one ONNX ``NonMaxSuppression``
  per image with ``max_output_boxes_per_class = max_per_img``: it returns
  the kept boxes best first, as mmdet's ``[:max_per_img]`` keeps them.

Inputs: ``images`` (B, 3, H, W), ``img_shapes`` (B, 2) float (h, w of each
resized image before padding), ``scale_factors`` (B, 2) float (w, h
factors of the resize). Outputs, flat over the batch: ``batch_indices``
(N,) int64, ``boxes`` (N, 4) x1 y1 x2 y2 in original pixels, ``scores``
(N,), ``labels`` (N,) int64.
"""
import math
from typing import Tuple

import torch
from torch import Tensor, nn

from projects.focal_retina_runtime.metadata import DeployError

SUPPORTED_NMS_KEYS = ('type', 'iou_threshold', 'class_agnostic', 'split_thr')


class NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (single class); eager: mmcv's ``nms``."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_out: int,
                iou_threshold: float, score_threshold: float) -> Tensor:
        """boxes (B, M, 4), scores (B, 1, M) → (S, 3) [batch, 0, box]."""
        from mmcv.ops import nms
        rows = []
        for b in range(boxes.shape[0]):
            idx = (scores[b, 0] > score_threshold).nonzero().view(-1)
            if idx.numel() == 0:
                continue
            _, keep = nms(boxes[b, idx], scores[b, 0, idx], iou_threshold)
            keep = idx[keep[:max_out]]
            rows.append(
                torch.stack(
                    [torch.full_like(keep, b),
                     torch.zeros_like(keep), keep], 1))
        return torch.cat(rows) if rows else boxes.new_zeros((0, 3)).long()

    @staticmethod
    def symbolic(g, boxes, scores, max_out: int, iou_threshold: float,
                 score_threshold: float):
        return g.op(
            'NonMaxSuppression',
            boxes,
            scores,
            g.op('Constant', value_t=torch.tensor([max_out])),
            g.op('Constant', value_t=torch.tensor([iou_threshold])),
            g.op('Constant', value_t=torch.tensor([score_threshold])),
            center_point_box_i=0)


class PostprocessGraph(nn.Module):
    """Detector + post-processing as one exportable module.

    Args:
        detector: The mmdet single-stage detector (eval mode).
        head: The ``head`` metadata (anchors, strides, coder).
        test_cfg: The model's ``test_cfg``.
    """

    def __init__(self, detector: nn.Module, head: dict,
                 test_cfg: dict) -> None:
        super().__init__()
        self.detector = detector
        nms_cfg = dict(test_cfg.get('nms') or {})
        unknown = sorted(set(nms_cfg) - set(SUPPORTED_NMS_KEYS))
        if nms_cfg.get('type', 'nms') != 'nms' or unknown or \
                'iou_threshold' not in nms_cfg:
            raise DeployError(
                f'--with-postprocess: test_cfg.nms={nms_cfg} is not plain '
                f'nms with {SUPPORTED_NMS_KEYS}; export without it (the '
                'NumPy post-processing handles it)')
        self.nms_pre = int(test_cfg.get('nms_pre', -1))
        if self.nms_pre <= 0:
            raise DeployError('--with-postprocess needs test_cfg.nms_pre > '
                              f'0 (got {self.nms_pre})')
        self.score_thr = float(test_cfg.get('score_thr', 0))
        self.min_bbox_size = float(test_cfg.get('min_bbox_size', -1))
        self.iou = float(nms_cfg['iou_threshold'])
        self.class_agnostic = bool(nms_cfg.get('class_agnostic', False))
        self.max_per_img = int(test_cfg.get('max_per_img', 0)) or 10**6
        self.num_classes = int(head['num_classes'])
        self.strides = [tuple(float(v) for v in s) for s in head['strides']]
        for i, base in enumerate(head['base_anchors']):
            self.register_buffer(
                f'base_anchors_{i}',
                torch.tensor(base, dtype=torch.float32),
                persistent=False)
        self.coder = dict(head['bbox_coder'])

    def _level(self, level: int, cls: Tensor,
               box: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Top ``nms_pre`` candidates of one level: scores (B, k), labels
        (B, k), valid (B, k), anchors (B, k, 4), deltas (B, k, 4)."""
        base = getattr(self, f'base_anchors_{level}')
        num_base = base.shape[0]
        width = torch._shape_as_tensor(cls)[3]
        scores = cls.permute(0, 2, 3, 1).flatten(1).sigmoid()  # (B, n*K)
        pad = torch.zeros_like(scores[:, :1]).expand(-1, self.nms_pre) - 1
        top, idx = torch.cat([scores, pad], 1).topk(self.nms_pre, dim=1)
        valid = top > self.score_thr
        num = torch._shape_as_tensor(scores)[1]
        idx = torch.where(idx < num, idx, torch.zeros_like(idx))
        anchor = idx // self.num_classes
        labels = idx % self.num_classes
        pos, a = anchor // num_base, anchor % num_base
        x = (pos % width).float() * self.strides[level][0]
        y = (pos // width).float() * self.strides[level][1]
        anchors = base[a] + torch.stack([x, y, x, y], -1)
        # reshape, not unflatten: aten::unflatten exports from opset 13
        # only, and this graph otherwise needs 10.
        deltas = box.permute(0, 2, 3, 1).reshape(box.shape[0], -1, 4)
        deltas = deltas.gather(1, anchor.unsqueeze(-1).expand(-1, -1, 4))
        return top, labels, valid, anchors, deltas

    def _decode(self, rois: Tensor, deltas: Tensor,
                img_shapes: Tensor) -> Tensor:
        """mmdet's ``delta2bbox`` on (B, k, 4), clipped per image."""
        c = self.coder
        means = deltas.new_tensor(c['means'])
        stds = deltas.new_tensor(c['stds'])
        denorm = deltas * stds + means
        dxy, dwh = denorm[..., :2], denorm[..., 2:]
        pxy = (rois[..., :2] + rois[..., 2:]) * 0.5
        pwh = rois[..., 2:] - rois[..., :2]
        dxy_wh = pwh * dxy
        max_ratio = abs(math.log(c['wh_ratio_clip']))
        if c.get('add_ctr_clamp', False):
            dxy_wh = dxy_wh.clamp(min=-c['ctr_clamp'], max=c['ctr_clamp'])
            dwh = dwh.clamp(max=max_ratio)
        else:
            dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
        gxy = pxy + dxy_wh
        gwh = pwh * dwh.exp()
        boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], -1)
        if c.get('clip_border', True):
            hw = img_shapes[:, None, :]  # (B, 1, 2) h, w
            bound = torch.cat([hw.flip(-1), hw.flip(-1)], -1)  # w h w h
            boxes = torch.minimum(boxes.clamp(min=0), bound)
        return boxes

    def forward(self, images: Tensor, img_shapes: Tensor,
                scale_factors: Tensor) -> Tuple[Tensor, ...]:
        cls_scores, bbox_preds = self.detector.bbox_head(
            self.detector.extract_feat(images))
        parts = [
            self._level(i, c, b)
            for i, (c, b) in enumerate(zip(cls_scores, bbox_preds))
        ]
        scores, labels, valid, anchors, deltas = (
            torch.cat([p[j] for p in parts], 1) for j in range(5))
        boxes = self._decode(anchors, deltas, img_shapes)
        inv = 1.0 / scale_factors  # (B, 2) w, h
        boxes = boxes * torch.cat([inv, inv], -1)[:, None, :]
        if self.min_bbox_size >= 0:
            w = boxes[..., 2] - boxes[..., 0]
            h = boxes[..., 3] - boxes[..., 1]
            valid = valid & (w > self.min_bbox_size) & (h > self.min_bbox_size)
        masked = torch.where(valid, scores, torch.full_like(scores, -1))
        boxes_for_nms = boxes
        if not self.class_agnostic:
            # mmcv's offset: the largest coordinate of the valid boxes.
            fill = torch.full_like(boxes, -math.inf)
            top = torch.where(valid[..., None], boxes, fill).flatten(1)
            top = top.max(1)[0]
            top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
            offsets = labels.float() * (top[:, None] + 1)
            boxes_for_nms = boxes + offsets[..., None]
        sel = NonMaxSuppression.apply(boxes_for_nms, masked.unsqueeze(1),
                                      self.max_per_img, self.iou, -0.5)
        flat = sel[:, 0] * scores.shape[1] + sel[:, 2]
        return (sel[:, 0], boxes.flatten(0, 1).index_select(0, flat),
                scores.flatten().index_select(0, flat),
                labels.flatten().index_select(0, flat))
