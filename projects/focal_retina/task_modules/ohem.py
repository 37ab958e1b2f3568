"""One-stage online hard example mining, the baseline of the paper's
Table 1d (Lin et al., "Focal Loss for Dense Object Detection", Sec. 5.1,
"Online Hard Example Mining").

The paper: "each example is scored by its loss, non-maximum suppression
(nms) is then applied, and a minibatch is constructed with the
highest-loss examples", and the SSD variant "OHEM 1:3": "after applying nms
to all examples, the minibatch is constructed to enforce a 1:3 ratio
between positives and negatives". No released code does this for a
one-stage detector (mmdet's ``OHEMSampler`` needs an RoI head, its
``SSDHead`` keeps 3:1 top-loss negatives without NMS), so it is written
here.

Where it lives. ``train_cfg.sampler=dict(type='OneStageOHEMSampler', ...)``
rather than a head option: example selection is a training-only setting,
and mmdet keeps it (samplers, its two-stage ``OHEMSampler``) in
``train_cfg.sampler``, which ``AnchorHead`` already builds with the head as
``context``; the Table 1d configs then differ from the CE baseline only
there. mmdet's anchor head calls ``sample()`` while assigning targets,
before any prediction exists, so the work is split: ``sample()`` is
:class:`PseudoSampler`'s (every anchor gets its target, so the box loss
keeps all positives, and mmdet's per-image avg_factor is unchanged), and
:meth:`select_examples` is called by ``FocalRetinaHead.loss_by_feat`` once
the logits are known. mmdet's own heads would never call it and silently
train on all anchors, so the sampler refuses a head without
``supports_example_mining``.

Score. Every non-ignored anchor (label weight > 0) is an example, scored by
the classification loss the config names (``loss_cls`` with
``reduction='none'``, label weights applied, summed over the K classes).
The paper's OHEM runs use CE, i.e. ``FocalFamilyLoss(gamma=0,
alpha=None)``: sigmoid binary CE summed over classes. The score is
computed in float32 under ``torch.no_grad`` (bf16 autocast logits are cast
first).

NMS. Class-agnostic, over the anchors' decoded predicted boxes (float32),
with the losses as scores, ``mmcv.ops.nms`` (compiled), IoU threshold
``nms_iou`` (paper: 0.5, 0.7; None: no NMS). Per image, the ``batch_size``
highest-loss survivors form the minibatch; only they enter the
classification loss (the head gathers their rows, so all other anchors get
exactly zero gradient).

Pre-selection. Greedy NMS decides an example from the examples of higher
loss only, so NMS over the top-T losses yields exactly the survivors of
the full NMS among those T. The sampler runs NMS on the top
``pre_nms_factor * batch_size`` losses and doubles T until the kept set is
decided: enough survivors (OHEM), or enough negative survivors and no
positive further down that could still enter the 1:3 quota. The kept set
is then the one of an NMS over all ~10^5 anchors, at the cost of a few
thousand (tests compare with a plain greedy NMS over everything). NMS runs
on rank scores (T, T-1, ..., 1) so that tied losses keep one order. The
doubling stops at ``max_candidates`` (default 16384): only the top
16384 losses of an image are candidates. In practice only OHEM 1:3 gets
there, when fewer than batch_size / 4 positives survive and an easy
positive ranks below thousands of negatives: the exact answer then needs
an NMS over every anchor (measured on one CPU core, 600 x 800 image,
91k anchors: 8 s, against at most 0.7 s for the doublings up to 16384;
``max_candidates=None`` pays it). Positives below the bound are not
candidates, as if pre-selected away.

OHEM 1:3. From the survivors in loss order: the highest-loss positives,
at most ``floor(batch_size * pos_fraction)`` (pos_fraction = 0.25), then
the highest-loss negatives fill the batch. With too few positives the
batch is filled with negatives (as mmdet's Random/OHEM samplers with
``neg_pos_ub=-1`` do), so the ratio degrades to p : (batch_size - p); when
negatives run short (tiny images) positives are cut to one per three
negatives, so "at most one positive per three negatives" always holds.
Without NMS and with ``batch_size = 4 * num_pos`` this is SSD's rule (all
positives, the 3 * num_pos hardest negatives); a test checks it against
mmdet's ``SSDHead``.

Normalisation. ``cls_avg_factor='num_pos'`` (default) divides the kept
loss by the head's normaliser (positive anchors, global or per GPU as the
head's ``normalizer`` says), the same as the box loss and as the FL/CE runs
of Table 1: only the set of examples differs between the rows of Table 1d,
and the cls/box balance the paper's lr 0.01 was set for is kept.
``'num_kept'`` divides by the number of kept examples instead (the
minibatch mean of OHEM / Fast R-CNN and of mmdet's sampling heads), counted
globally (all-reduced) or per GPU (sum of max(kept, 1) over images) by the
same head switch. Selection is per image, so it needs no communication
across processes.
"""
from typing import Callable, Optional, Tuple

import torch
from mmcv.ops import nms
from mmdet.models.task_modules.samplers import PseudoSampler
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import get_box_tensor
from torch import Tensor, nn

from ..utils.arguments import check_arguments

AVG_FACTORS = ('num_pos', 'num_kept')


def example_losses(loss_cls: nn.Module, cls: Tensor, labels: Tensor,
                   label_weights: Tensor) -> Tensor:
    """Per-anchor loss: ``loss_cls`` unreduced, summed over classes.

    Args:
        loss_cls: An mmdet classification loss taking
            ``reduction_override='none'``.
        cls: (R, K) logits (any float dtype; scored in float32).
        labels: (R,) labels, background = K.
        label_weights: (R,) weights (0 for ignored anchors).

    Returns:
        (R,) float32 losses.
    """
    loss = loss_cls(
        cls.detach().float(),
        labels,
        label_weights.float(),
        reduction_override='none')
    return (loss.sum(dim=1) if loss.dim() == 2 else loss).float()


def _nms_survivors(idx: Tensor, decode: Callable[[Tensor], Tensor],
                   iou: Optional[float]) -> Tensor:
    """Positions (ascending) of the greedy-NMS survivors among the anchors
    ``idx`` (T,), which are sorted by decreasing loss."""
    t = idx.numel()
    if iou is None:  # no NMS: nothing to decode
        return torch.arange(t, device=idx.device)
    boxes = decode(idx).float()
    # Rank scores: mmcv sorts by score, and ties must not reorder.
    rank = torch.arange(t, 0, -1, dtype=torch.float32, device=boxes.device)
    _, keep = nms(boxes, rank, iou)
    return keep.sort().values


def _quotas(num_pos: int, num_neg: int, batch_size: int,
            pos_fraction: Optional[float]) -> Tuple[int, int]:
    """(positives, negatives) kept of the survivors, see module doc."""
    if pos_fraction is None:
        k = min(num_pos + num_neg, batch_size)
        return k, k  # plain OHEM: the first k survivors, any label
    k_pos = min(num_pos, int(batch_size * pos_fraction))
    k_neg = min(num_neg, batch_size - k_pos)
    # At most pos_fraction / (1 - pos_fraction) positives per negative.
    k_pos = min(k_pos, int(k_neg * pos_fraction / (1 - pos_fraction) + 1e-9))
    return k_pos, k_neg


def select_image(scores: Tensor,
                 is_pos: Tensor,
                 valid: Tensor,
                 decode: Callable[[Tensor], Tensor],
                 batch_size: int,
                 nms_iou: Optional[float],
                 pos_fraction: Optional[float] = None,
                 pre_nms_factor: int = 4,
                 max_candidates: Optional[int] = 16384) -> Tensor:
    """The OHEM minibatch of one image.

    Args:
        scores: (M,) per-anchor losses.
        is_pos: (M,) bool, anchor assigned to a box.
        valid: (M,) bool, anchor not ignored.
        decode: Maps (T,) anchor indices to their (T, 4) predicted boxes.
        batch_size, nms_iou, pos_fraction, pre_nms_factor,
            max_candidates: See :class:`OneStageOHEMSampler`.

    Returns:
        Sorted (<= batch_size,) indices of the kept anchors.
    """
    cand = torch.nonzero(valid).squeeze(1)
    if cand.numel() == 0:
        return cand
    order = cand[torch.sort(scores[cand], descending=True, stable=True)[1]]
    if max_candidates is not None:
        order = order[:max_candidates]  # the pre-selection by loss
    pos_sorted = is_pos[order]
    n = order.numel()
    t = min(n, pre_nms_factor * batch_size)
    while True:
        surv = _nms_survivors(order[:t], decode, nms_iou)
        surv_pos = pos_sorted[surv]
        num_pos = int(surv_pos.sum())
        num_neg = surv.numel() - num_pos
        if t == n or _decided(num_pos, num_neg, bool(pos_sorted[t:].any()),
                              batch_size, pos_fraction):
            break
        t = min(n, 2 * t)
    k_pos, k_neg = _quotas(num_pos, num_neg, batch_size, pos_fraction)
    if pos_fraction is None:
        kept = surv[:k_pos]
    else:
        kept = torch.cat([surv[surv_pos][:k_pos], surv[~surv_pos][:k_neg]])
    return order[kept].sort().values


def _decided(num_pos: int, num_neg: int, pos_left: bool, batch_size: int,
             pos_fraction: Optional[float]) -> bool:
    """Whether the survivors among the top t fix the kept set: enough of
    them (OHEM); enough negatives for the quota the positives leave, and no
    later positive that could still change that quota (1:3)."""
    if pos_fraction is None:
        return num_pos + num_neg >= batch_size
    cap = int(batch_size * pos_fraction)
    if num_pos < cap and pos_left:
        return False
    return num_neg >= batch_size - min(num_pos, cap)


@TASK_UTILS.register_module()
@check_arguments
class OneStageOHEMSampler(PseudoSampler):
    """OHEM / OHEM 1:3 for a one-stage head (paper Sec. 5.1, Table 1d).

    Args:
        batch_size: Examples kept per image (paper: 128, 256, 512).
        nms_iou: IoU threshold of the NMS over examples (paper: 0.5, 0.7),
            or None for no NMS.
        pos_fraction: None for OHEM; 0.25 for OHEM 1:3 (at most one
            positive per three negatives, negatives fill the batch).
        cls_avg_factor: ``'num_pos'`` (the head's normaliser) or
            ``'num_kept'`` (kept examples), see the module doc.
        pre_nms_factor: First NMS over the top ``pre_nms_factor *
            batch_size`` losses, doubled until the result is decided.
        max_candidates: Only the top ``max_candidates`` losses of an image
            are candidates (None: all), which bounds the NMS cost.
        context: The head (given by mmdet's ``AnchorHead``); it must have
            ``supports_example_mining`` (``FocalRetinaHead``).
    """

    def __init__(self,
                 batch_size: int = 256,
                 nms_iou: Optional[float] = 0.7,
                 pos_fraction: Optional[float] = None,
                 cls_avg_factor: str = 'num_pos',
                 pre_nms_factor: int = 4,
                 max_candidates: Optional[int] = 16384,
                 context: Optional[nn.Module] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(
                batch_size,
                bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'batch_size must be an int >= 1, got '
                             f'batch_size={batch_size!r}')
        if nms_iou is not None and not 0.0 < nms_iou <= 1.0:
            raise ValueError(f'nms_iou must be None or in (0, 1], got '
                             f'nms_iou={nms_iou!r}')
        if pos_fraction is not None and not 0.0 < pos_fraction < 1.0:
            raise ValueError(f'pos_fraction must be None or in (0, 1), '
                             f'got pos_fraction={pos_fraction!r}')
        if cls_avg_factor not in AVG_FACTORS:
            raise ValueError(f'cls_avg_factor must be one of {AVG_FACTORS},'
                             f' got cls_avg_factor={cls_avg_factor!r}')
        if isinstance(pre_nms_factor, bool) or not isinstance(
                pre_nms_factor, int) or pre_nms_factor < 1:
            raise ValueError(f'pre_nms_factor must be an int >= 1, got '
                             f'pre_nms_factor={pre_nms_factor!r}')
        if max_candidates is not None and (isinstance(
                max_candidates, bool) or not isinstance(max_candidates, int)
                                           or max_candidates < batch_size):
            raise ValueError(f'max_candidates must be None or an int >= '
                             f'batch_size={batch_size}, got '
                             f'max_candidates={max_candidates!r}')
        if context is not None and not getattr(
                context, 'supports_example_mining', False):
            raise ValueError(
                f'train_cfg.sampler=OneStageOHEMSampler needs a head that '
                f'applies its selection (FocalRetinaHead), got '
                f'{type(context).__name__}, which would train on all '
                f'anchors')
        self.batch_size = batch_size
        self.nms_iou = nms_iou
        self.pos_fraction = pos_fraction
        self.cls_avg_factor = cls_avg_factor
        self.pre_nms_factor = pre_nms_factor
        self.max_candidates = max_candidates

    @torch.no_grad()
    def select_examples(self, cls: Tensor, deltas: Tensor, anchors: Tensor,
                        labels: Tensor, label_weights: Tensor, num_imgs: int,
                        loss_cls: nn.Module,
                        bbox_coder) -> Tuple[Tensor, Tensor]:
        """Pick the minibatch of every image.

        Args:
            cls: (N*M, K) logits, image-major rows.
            deltas: (N*M, 4) predicted box deltas.
            anchors: (N*M, 4) anchors.
            labels: (N*M,) labels, background = K.
            label_weights: (N*M,) weights, 0 for ignored anchors.
            num_imgs: N.
            loss_cls: The head's classification loss (the score).
            bbox_coder: Decodes ``deltas`` on ``anchors``.

        Returns:
            (keep, counts): row indices (R,) into the N*M rows, and the
            (N,) number kept per image.
        """
        scores = example_losses(loss_cls, cls, labels, label_weights)
        is_pos = (labels >= 0) & (labels < cls.size(1))
        valid = label_weights > 0
        per_img = cls.size(0) // num_imgs
        keeps = []
        for i in range(num_imgs):
            rows = slice(i * per_img, (i + 1) * per_img)
            img_anchors, img_deltas = anchors[rows], deltas[rows]

            def decode(idx: Tensor) -> Tensor:
                return get_box_tensor(
                    bbox_coder.decode(img_anchors[idx],
                                      img_deltas[idx].float()))

            keep = select_image(scores[rows], is_pos[rows], valid[rows],
                                decode, self.batch_size, self.nms_iou,
                                self.pos_fraction, self.pre_nms_factor,
                                self.max_candidates)
            keeps.append(keep + i * per_img)
        counts = torch.tensor([k.numel() for k in keeps], device=cls.device)
        return torch.cat(keeps), counts
