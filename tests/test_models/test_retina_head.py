"""FocalRetinaHead: prior init, the paper's normaliser, and equality with
mmdet's RetinaHead + FocalLoss (an independent implementation)."""
import math

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from projects.focal_retina.models.retina_head import prior_bias

NUM_CLASSES = 3
IMG = dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1., 1.))


def head_cfg(**kwargs) -> dict:
    cfg = dict(
        type='FocalRetinaHead',
        num_classes=NUM_CLASSES,
        in_channels=8,
        stacked_convs=2,
        feat_channels=8,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0] * 4,
            target_stds=[1.0] * 4),
        loss_cls=dict(type='FocalFamilyLoss', gamma=2.0, alpha=0.25),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0),
        train_cfg=ConfigDict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.4,
                min_pos_iou=0,
                ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'),
            allowed_border=-1,
            pos_weight=-1,
            debug=False))
    cfg.update(kwargs)
    return cfg


def feats(batch: int = 1):
    torch.manual_seed(0)
    return [torch.randn(batch, 8, 8, 8), torch.randn(batch, 8, 4, 4)]


def gt(boxes) -> InstanceData:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return InstanceData(
        bboxes=boxes, labels=torch.arange(len(boxes)) % NUM_CLASSES)


def losses_of(head, gts):
    outs = head(feats(len(gts)))
    return head.loss_by_feat(*outs, gts, [IMG] * len(gts))


@pytest.mark.parametrize('prior', [0.01, 0.2, None])
def test_prior_initialisation(prior):
    head = MODELS.build(head_cfg(prior_prob=prior))
    head.init_weights()
    expected = 0.0 if prior is None else -math.log((1 - prior) / prior)
    torch.testing.assert_close(head.retina_cls.bias,
                               torch.full_like(head.retina_cls.bias, expected))
    if prior is not None:  # sigmoid(bias) is the prior
        assert torch.sigmoid(head.retina_cls.bias[0]).item() == \
            pytest.approx(prior)
    assert torch.count_nonzero(head.retina_reg.bias) == 0
    assert head.cls_convs[0].conv.weight.std().item() == \
        pytest.approx(0.01, rel=0.3)


@pytest.mark.parametrize(
    'bad',
    [dict(prior_prob=0.0),
     dict(prior_prob=1.5),
     dict(normalizer='per_image')])
def test_invalid_settings(bad):
    with pytest.raises(ValueError, match=list(bad)[0]):
        MODELS.build(head_cfg(**bad))


def test_prior_bias_value():
    assert prior_bias(0.01) == pytest.approx(-4.59511985)  # -ln 99


def mmdet_reference():
    cfg = head_cfg(
        type='RetinaHead',
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0))
    return MODELS.build(cfg)


@pytest.mark.parametrize('normalizer', ['global', 'per_gpu'])
def test_matches_mmdet_when_every_image_has_a_box(normalizer):
    ours = MODELS.build(head_cfg(normalizer=normalizer))
    ours.init_weights()
    ref = mmdet_reference()
    ref.load_state_dict(ours.state_dict())
    gts = [gt([[4, 4, 36, 40]]), gt([[10, 20, 60, 50], [0, 0, 20, 20]])]
    got, want = losses_of(ours, gts), losses_of(ref, gts)
    for key in ('loss_cls', 'loss_bbox'):
        torch.testing.assert_close(
            sum(got[key]), sum(want[key]), rtol=1e-5, atol=1e-7)


def test_global_normaliser_differs_from_mmdet_on_empty_image():
    """mmdet counts max(num_pos, 1) per image; the paper counts positives
    over the batch (at least 1)."""
    ours = MODELS.build(head_cfg())
    ours.init_weights()
    per_gpu = MODELS.build(head_cfg(normalizer='per_gpu'))
    per_gpu.load_state_dict(ours.state_dict())
    gts = [gt([[4, 4, 36, 40]]), gt([])]
    outs = ours(feats(2))
    anchors, valid = ours.get_anchors([f.shape[-2:] for f in outs[0]],
                                      [IMG] * 2,
                                      device='cpu')
    targets = ours.get_targets(anchors, valid, gts, [IMG] * 2)
    ref_targets = per_gpu.get_targets(anchors, valid, gts, [IMG] * 2)
    num_pos = sum(((lab < NUM_CLASSES) & (w > 0)).sum().item()
                  for lab, w in zip(targets[0], targets[1]))
    assert num_pos > 0
    assert float(targets[4]) == num_pos
    assert float(ref_targets[4]) == num_pos + 1  # the empty image counts 1
    got, want = (sum(losses_of(h, gts)['loss_cls']) for h in (ours, per_gpu))
    torch.testing.assert_close(got * num_pos, want * (num_pos + 1))


def test_empty_ground_truth():
    head = MODELS.build(head_cfg())
    head.init_weights()
    losses = losses_of(head, [gt([])])
    assert sum(losses['loss_bbox']) == 0
    assert sum(losses['loss_cls']) > 0
    # normaliser 1: the loss is the plain sum of FL over all anchors, each
    # scoring ~the prior 0.01: -(1 - 0.25) * 0.01^2 * log(0.99) per term
    num_anchors = (8 * 8 + 4 * 4) * 9 * NUM_CLASSES
    per_term = -(0.75) * 0.01**2 * math.log(0.99)
    assert sum(losses['loss_cls']).item() == \
        pytest.approx(num_anchors * per_term, rel=0.2)


def test_one_pixel_box_gets_a_positive_and_finite_loss():
    head = MODELS.build(head_cfg())
    head.init_weights()
    losses = losses_of(head, [gt([[30, 30, 31, 31]])])
    total = sum(losses['loss_cls']) + sum(losses['loss_bbox'])
    assert torch.isfinite(total)
    # low-quality matching (min_pos_iou=0) assigns it its best anchor
    assert sum(losses['loss_bbox']) > 0


def test_ignore_band_and_positive_assignment():
    """IoU >= 0.5 foreground, < 0.4 background, [0.4, 0.5) ignored."""
    head = MODELS.build(head_cfg())
    box = [[8.0, 8.0, 44.0, 40.0]]
    anchors, valid = head.get_anchors([(8, 8), (4, 4)], [IMG], device='cpu')
    targets = head.get_targets(anchors, valid, [gt(box)], [IMG])
    labels = torch.cat(targets[0], dim=1)[0]
    weights = torch.cat(targets[1], dim=1)[0]
    all_anchors = torch.cat(anchors[0])
    iou = bbox_overlaps(all_anchors, torch.tensor(box)).squeeze(1)
    band = (iou >= 0.4) & (iou < 0.5)
    assert band.any()
    best = iou.argmax()
    band[best] = False  # the best anchor is kept as a low-quality match
    assert (weights[band] == 0).all()
    assert (labels[iou >= 0.5] == 0).all()
    assert (labels[iou < 0.4] == NUM_CLASSES).sum() == \
        (iou < 0.4).sum() - int(iou[best] < 0.4)
    assert (weights[iou < 0.4] == 1).all()
