"""The RetinaNet head, where it differs from mmdet's ``RetinaHead``.

mmdet's RetinaHead already matches the paper's subnets (Sec. 4, Fig. 3:
4 x (3x3 conv, ReLU) towers with separate weights, K*A sigmoid outputs and
4*A class-agnostic box outputs). What differs lives here:

* The normaliser. The paper sums the classification loss over all
  non-ignored anchors and divides by the number of anchors assigned to a
  box. mmdet divides by sum over images of max(num_pos, 1) on each GPU, so
  the loss depends on how the 16 images of a batch are split over GPUs.
  With ``normalizer='global'`` the count is all-reduced over processes.
* The prior (Sec. 3.3 / 4.1): bias of the last classification conv =
  -log((1 - pi) / pi), applied after any ``init_cfg`` so that it is never
  lost. ``prior_prob=None`` sets the bias to 0, the "no prior" setting with
  which the paper reports CE to diverge.
* One classification-loss call over all levels. mmdet's
  ``AnchorHead.loss_by_feat`` calls the loss once per FPN level, so a loss
  that is not a sum over anchors (a softmax over the batch, OHEM's NMS
  across levels, Sec. 5.1) cannot be computed there. Here the levels are
  concatenated per image (image-major: image 0's anchors of every level,
  then image 1's, ...) and the loss is called once as
  ``loss_cls(scores (N*M, K), labels (N*M,), weights (N*M,), avg_factor,
  **extra)``, background = K, ignored anchors weight 0, and ``extra =
  dict(num_images=N)`` for a loss whose ``needs_num_images`` is true. For
  a per-anchor loss (FL) the value is mmdet's per-level sum.
* Example mining: a sampler with ``supports_example_mining`` hooks (e.g.
  ``OneStageOHEMSampler`` under ``train_cfg.sampler``) picks, from the
  per-anchor losses, the anchors that enter the classification loss.
"""
import math
import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import cat_boxes, get_box_tensor
from mmdet.utils import InstanceList, OptInstanceList
from torch import Tensor

from ..utils.arguments import check_arguments

NORMALIZERS = ('global', 'per_gpu')
_CLS_CONV = 'retina_cls'


def prior_bias(prior_prob: Optional[float]) -> float:
    """Bias making every anchor start at foreground probability ``pi``.

    Args:
        prior_prob: pi in (0, 1), or None for no prior (bias 0, p = 0.5).

    Returns:
        -log((1 - pi) / pi), so that sigmoid(bias) = pi.
    """
    if prior_prob is None:
        return 0.0
    if not 0.0 < prior_prob < 1.0:
        raise ValueError(f'prior_prob must be in (0, 1) or None, '
                         f'got {prior_prob!r}')
    return -math.log((1.0 - prior_prob) / prior_prob)


def global_num_pos(num_pos: Tensor) -> Tensor:
    """The paper's normaliser as each process must apply it under DDP.

    DDP averages gradients over the W processes, so a process dividing its
    local loss sum by ``total_num_pos / W`` yields, after averaging, the
    gradient of (sum over all images) / total_num_pos: exactly what one
    process holding all 16 images computes. Any other count (e.g. OHEM's
    kept examples) is made global the same way.

    Args:
        num_pos: Scalar count on this process.

    Returns:
        max(sum over processes of num_pos, 1) / world_size.
    """
    num_pos = num_pos.detach().float()
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        dist.all_reduce(num_pos, op=dist.ReduceOp.SUM)
    return num_pos.clamp(min=1.0) / world_size


def _as_list(init_cfg) -> list:
    if init_cfg is None:
        return []
    return list(init_cfg) if isinstance(init_cfg, (list, tuple)) \
        else [init_cfg]


def _check_anchor_cfg(cfg: Optional[dict]) -> None:
    """Rejects anchor settings that would give no anchors (mmdet builds
    them and fails later, at the first assignment, with an empty tensor)."""
    if not cfg:
        return
    ratios = cfg.get('ratios')
    if ratios is not None and (len(ratios) == 0
                               or any(not r > 0 for r in ratios)):
        raise ValueError('anchor_generator.ratios must be a non-empty list '
                         f'of numbers > 0, got {ratios!r}')
    scales = cfg.get('scales')
    if scales is not None and (len(scales) == 0
                               or any(not s > 0 for s in scales)):
        raise ValueError('anchor_generator.scales must be a non-empty list '
                         f'of numbers > 0, got {scales!r}')
    per_octave = cfg.get('scales_per_octave')
    if per_octave is not None and not (isinstance(per_octave, int)
                                       and per_octave >= 1):
        raise ValueError('anchor_generator.scales_per_octave must be an int '
                         f'>= 1, got {per_octave!r}')
    base = cfg.get('octave_base_scale')
    if base is not None and not base > 0:
        raise ValueError('anchor_generator.octave_base_scale must be > 0, '
                         f'got {base!r}')


def _check_init_cfg(init_cfg, bias: float) -> bool:
    """Whether the prior is to be applied after ``init_cfg``; warn when the
    config asks ``retina_cls`` for another bias (the prior wins).

    A ``Pretrained`` entry brings its own bias, so the prior is not applied.
    """
    cfgs = _as_list(init_cfg)
    if any(c.get('type') == 'Pretrained' for c in cfgs):
        return False
    for cfg in cfgs:
        for ovr in _as_list(cfg.get('override')):
            if ovr.get('name') != _CLS_CONV:
                continue
            asked = ovr.get('bias')
            if ovr.get('bias_prob') is not None:
                asked = prior_bias(ovr['bias_prob'])
            if asked is not None and not math.isclose(
                    asked, bias, rel_tol=1e-6, abs_tol=1e-9):
                warnings.warn(
                    f'init_cfg sets {_CLS_CONV}.bias to {asked:.6g} but '
                    f'prior_prob gives {bias:.6g}; the prior is applied '
                    f'(set prior_prob to change it)')
    return True


@MODELS.register_module()
@check_arguments
class FocalRetinaHead(RetinaHead):
    """RetinaNet head with the paper's normaliser and a prior switch.

    Args:
        num_classes: Number of foreground classes K.
        in_channels: Channels of the FPN levels.
        prior_prob: Initial foreground probability pi (paper: 0.01), or
            None for no prior. Applied to ``retina_cls.bias`` after
            ``init_cfg`` (unless ``init_cfg`` loads a ``Pretrained`` head),
            so an explicit ``init_cfg`` cannot drop it; a conflicting bias
            in ``init_cfg`` is reported with a warning.
        normalizer: ``'global'`` (the paper's count of positive anchors over
            the whole batch, all-reduced over processes) or ``'per_gpu'``
            (mmdet's sum of max(num_pos, 1) over the images of a process).
        **kwargs: Passed to mmdet's :class:`RetinaHead` (stacked_convs,
            feat_channels, anchor_generator, losses, train/test cfg...).
    """

    # Lets a mining sampler built under train_cfg check that its
    # selection will be honoured (mmdet's own heads would ignore it).
    supports_example_mining = True

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 prior_prob: Optional[float] = 0.01,
                 normalizer: str = 'global',
                 **kwargs) -> None:
        if normalizer not in NORMALIZERS:
            raise ValueError(f'normalizer must be one of {NORMALIZERS}, '
                             f'got {normalizer!r}')
        prior_bias(prior_prob)  # validates pi before anything is built
        _check_anchor_cfg(kwargs.get('anchor_generator'))
        self.prior_prob = prior_prob
        self.normalizer = normalizer
        # mmdet sizes the classifier from the loss *config* (use_sigmoid
        # defaults to False there, i.e. K + 1 softmax outputs); RetinaNet
        # is a sigmoid classifier, so default it to True.
        loss_cls = dict(
            kwargs.get('loss_cls')
            or dict(type='FocalFamilyLoss', gamma=2.0, alpha=0.25))
        loss_cls.setdefault('use_sigmoid', True)
        kwargs['loss_cls'] = loss_cls
        # All new convs N(0, 0.01) with bias 0 (Sec. 4.1,
        # "Initialization"); the prior bias is set in init_weights.
        kwargs.setdefault(
            'init_cfg',
            dict(type='Normal', layer='Conv2d', std=0.01, bias=0.0))
        self._apply_prior = _check_init_cfg(kwargs['init_cfg'],
                                            prior_bias(prior_prob))
        super().__init__(num_classes, in_channels, **kwargs)
        self._check_mining_loss()

    def _check_mining_loss(self) -> None:
        """A mining sampler scores every anchor by its own loss
        (``reduction='none'``) and keeps a different number of anchors per
        image: the loss must be elementwise."""
        sampler = self._mining_sampler()
        if sampler is None:
            return
        loss = self.loss_cls
        name = type(loss).__name__
        if not getattr(loss, 'elementwise', True):
            grouping = getattr(loss, 'grouping', None)
            setting = f'{name}(grouping={grouping!r})' if grouping else name
            raise ValueError(
                f'train_cfg.sampler={type(sampler).__name__} ranks anchors '
                f'by their own loss, but loss_cls={setting} gives one value '
                'per group of anchors, not per anchor (every grouping of '
                f'{name} does, per_image too); use OHEM with an elementwise '
                "loss (e.g. loss_cls=dict(type='FocalFamilyLoss', gamma=0, "
                "alpha=None)) or train the DR loss without train_cfg.sampler")
        if getattr(loss, 'needs_num_images', False):
            raise ValueError(
                f'train_cfg.sampler={type(sampler).__name__} keeps a '
                f'different number of anchors per image, which {name} '
                '(needs_num_images) can not take')

    def init_weights(self) -> None:
        """``init_cfg``, then the prior bias of the last cls conv."""
        super().init_weights()
        if self._apply_prior:
            with torch.no_grad():
                getattr(self,
                        _CLS_CONV).bias.fill_(prior_bias(self.prior_prob))

    def _mining_sampler(self):
        sampler = getattr(self, 'sampler', None)
        return sampler if hasattr(sampler, 'select_examples') else None

    def _normalise_count(self, counts: Tensor) -> Tensor:
        """Global (all-reduced) or per-GPU normaliser from per-image counts
        ``(N,)``, following ``self.normalizer``."""
        if self.normalizer == 'global':
            return global_num_pos(counts.sum())
        return counts.float().clamp(min=1).sum()  # mmdet's max(n, 1)

    def get_targets(self, *args, **kwargs) -> Tuple:
        """mmdet's targets with the avg_factor replaced by our normaliser.

        Returns:
            (labels_list, label_weights_list, bbox_targets_list,
            bbox_weights_list, avg_factor, *rest) where the lists hold one
            tensor per level of shape (N, H*W*A) (labels) or (N, H*W*A, 4)
            (boxes) and ``rest`` is whatever mmdet returns after avg_factor
            (sampling results, user-added returns), passed through.
        """
        targets = super().get_targets(*args, **kwargs)
        if self.normalizer == 'per_gpu':
            return targets
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list,
         _, *rest) = targets
        num_pos = torch.stack([
            ((labels >= 0) & (labels < self.num_classes)
             & (weights > 0)).sum()
            for labels, weights in zip(labels_list, label_weights_list)
        ]).sum()
        return (labels_list, label_weights_list, bbox_targets_list,
                bbox_weights_list, global_num_pos(num_pos), *rest)

    def loss_by_feat(
        self,
        cls_scores: List[Tensor],
        bbox_preds: List[Tensor],
        batch_gt_instances: InstanceList,
        batch_img_metas: List[dict],
        batch_gt_instances_ignore: OptInstanceList = None
    ) -> Dict[str, List[Tensor]]:
        """Classification and box losses, each computed once over all levels.

        Args:
            cls_scores: Per level (N, A*K, H, W) logits.
            bbox_preds: Per level (N, A*4, H, W) box deltas.
            batch_gt_instances: Per image gt ``bboxes`` and ``labels``.
            batch_img_metas: Per image meta information.
            batch_gt_instances_ignore: Per image boxes to ignore.

        Returns:
            ``dict(loss_cls=[loss], loss_bbox=[loss])``: one-element lists
            (mmdet's heads return one entry per level; callers sum them).
        """
        num_imgs = len(batch_img_metas)
        device = cls_scores[0].device
        featmap_sizes = [f.size()[-2:] for f in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(
            featmap_sizes, batch_img_metas, device=device)
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list,
         avg_factor, *_) = self.get_targets(
             anchor_list,
             valid_flag_list,
             batch_gt_instances,
             batch_img_metas,
             batch_gt_instances_ignore=batch_gt_instances_ignore)

        # Image-major rows: (N, M, C) -> (N*M, C), M anchors per image.
        cls = _levels_to_rows(cls_scores, self.cls_out_channels)
        deltas = _levels_to_rows(bbox_preds, self.bbox_coder.encode_size)
        labels = torch.cat(labels_list, dim=1).reshape(-1)
        label_weights = torch.cat(label_weights_list, dim=1).reshape(-1)
        anchors = torch.cat(
            [get_box_tensor(cat_boxes(a)) for a in anchor_list])

        loss_cls = self._loss_cls(cls, deltas, anchors, labels, label_weights,
                                  avg_factor, num_imgs)
        target_dim = bbox_targets_list[0].size(-1)
        bbox_targets = torch.cat(bbox_targets_list, 1).reshape(-1, target_dim)
        bbox_weights = torch.cat(bbox_weights_list, 1).reshape(-1, target_dim)
        if self.reg_decoded_bbox:
            deltas = get_box_tensor(self.bbox_coder.decode(anchors, deltas))
        loss_bbox = self.loss_bbox(
            deltas, bbox_targets, bbox_weights, avg_factor=avg_factor)
        return dict(loss_cls=[loss_cls], loss_bbox=[loss_bbox])

    def _loss_cls(self, cls: Tensor, deltas: Tensor, anchors: Tensor,
                  labels: Tensor, label_weights: Tensor, avg_factor,
                  num_imgs: int) -> Tensor:
        """The one classification-loss call; with a mining sampler, only on
        the rows it keeps (gathered, so unkept rows get zero gradient)."""
        sampler = self._mining_sampler()
        if sampler is not None:
            keep, counts = sampler.select_examples(cls, deltas, anchors,
                                                   labels, label_weights,
                                                   num_imgs, self.loss_cls,
                                                   self.bbox_coder)
            cls, labels, label_weights = (cls[keep], labels[keep],
                                          label_weights[keep])
            if sampler.cls_avg_factor == 'num_kept':
                avg_factor = self._normalise_count(counts)
            return self.loss_cls(
                cls, labels, label_weights, avg_factor=avg_factor)
        extra = {}
        if getattr(self.loss_cls, 'needs_num_images', False):
            extra['num_images'] = num_imgs
        return self.loss_cls(
            cls, labels, label_weights, avg_factor=avg_factor, **extra)


def _levels_to_rows(maps: List[Tensor], channels: int) -> Tensor:
    """Per level (N, A*C, H, W) maps -> (N*M, C) rows, image-major, with the
    (H, W, A) order of mmdet's anchors within each level."""
    num_imgs = maps[0].size(0)
    rows = [
        m.permute(0, 2, 3, 1).reshape(num_imgs, -1, channels) for m in maps
    ]
    return torch.cat(rows, dim=1).reshape(-1, channels)
