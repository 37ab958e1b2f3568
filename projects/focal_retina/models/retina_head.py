"""The RetinaNet head, where it differs from mmdet's ``RetinaHead``.

mmdet's RetinaHead already matches the paper's subnets (Sec. 4, Fig. 3:
4 x (3x3 conv, ReLU) towers with separate weights, K*A sigmoid outputs and
4*A class-agnostic box outputs). Two points differ and live here:

* The normaliser. The paper sums the classification loss over all
  non-ignored anchors and divides by the number of anchors assigned to a
  box. mmdet divides by sum over images of max(num_pos, 1) on each GPU, so
  the loss depends on how the 16 images of a batch are split over GPUs.
  With ``normalizer='global'`` the count is all-reduced over processes.
* The prior (Sec. 3.3 / 4.1): bias of the last classification conv =
  -log((1 - pi) / pi). ``prior_prob=None`` sets the bias to 0, the "no
  prior" setting with which the paper reports CE to diverge.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS
from torch import Tensor

NORMALIZERS = ('global', 'per_gpu')


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
    process holding all 16 images computes.

    Args:
        num_pos: Scalar count of positive anchors on this process.

    Returns:
        max(sum over processes of num_pos, 1) / world_size.
    """
    num_pos = num_pos.detach().float()
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        dist.all_reduce(num_pos, op=dist.ReduceOp.SUM)
    return num_pos.clamp(min=1.0) / world_size


@MODELS.register_module()
class FocalRetinaHead(RetinaHead):
    """RetinaNet head with the paper's normaliser and a prior switch.

    Args:
        num_classes: Number of foreground classes K.
        in_channels: Channels of the FPN levels.
        prior_prob: Initial foreground probability pi (paper: 0.01), or
            None for no prior.
        normalizer: ``'global'`` (the paper's count of positive anchors over
            the whole batch, all-reduced over processes) or ``'per_gpu'``
            (mmdet's sum of max(num_pos, 1) over the images of a process).
        **kwargs: Passed to mmdet's :class:`RetinaHead` (stacked_convs,
            feat_channels, anchor_generator, losses, train/test cfg...).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 prior_prob: Optional[float] = 0.01,
                 normalizer: str = 'global',
                 **kwargs) -> None:
        if normalizer not in NORMALIZERS:
            raise ValueError(f'normalizer must be one of {NORMALIZERS}, '
                             f'got {normalizer!r}')
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
        # All new convs N(0, 0.01) with bias 0; the last cls conv's bias
        # carries the prior (Sec. 4.1, "Initialization").
        kwargs.setdefault(
            'init_cfg',
            dict(
                type='Normal',
                layer='Conv2d',
                std=0.01,
                bias=0.0,
                override=dict(
                    type='Normal',
                    name='retina_cls',
                    std=0.01,
                    bias=prior_bias(prior_prob))))
        super().__init__(num_classes, in_channels, **kwargs)

    def get_targets(self, *args, **kwargs) -> Tuple:
        """mmdet's targets with the avg_factor replaced by our normaliser.

        Returns:
            (labels_list, label_weights_list, bbox_targets_list,
            bbox_weights_list, avg_factor); the lists hold one tensor per
            level of shape (N, H*W*A) (labels) or (N, H*W*A, 4) (boxes).
        """
        targets = super().get_targets(*args, **kwargs)
        if self.normalizer == 'per_gpu':
            return targets
        labels_list: List[Tensor] = targets[0]
        label_weights_list: List[Tensor] = targets[1]
        num_pos = sum(
            ((labels >= 0) & (labels < self.num_classes)
             & (weights > 0)).sum()
            for labels, weights in zip(labels_list, label_weights_list))
        num_pos = torch.as_tensor(num_pos, device=labels_list[0].device)
        return (*targets[:4], global_num_pos(num_pos))
