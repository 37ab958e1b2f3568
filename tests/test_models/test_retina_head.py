"""FocalRetinaHead: prior init, the paper's normaliser, one classification
loss call over all levels, and equality with mmdet's RetinaHead + FocalLoss
(an independent implementation)."""
import math
import warnings

import pytest
import torch
from mmdet.models.task_modules.samplers import SamplingResult
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
    # exactly: every (anchor, class) is a negative, eq. 5 with y = -1 is
    # (1 - alpha) p^2 (-log(1 - p)), summed and divided by 1
    logits = torch.cat([s.flatten() for s in head(feats(1))[0]]).double()
    p = logits.sigmoid()
    expected = (0.75 * p**2 * -torch.log1p(-p)).sum().item()
    assert logits.numel() == num_anchors
    assert sum(losses['loss_cls']).item() == pytest.approx(expected, rel=1e-5)


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


def test_loss_matches_mmdet_per_gpu_with_gradients():
    """Per-GPU normaliser: the single call over all levels gives mmdet's
    per-level sum, loss and logit gradients, also with an empty image and
    ignored anchors."""
    ours = MODELS.build(head_cfg(normalizer='per_gpu'))
    ours.init_weights()
    ref = mmdet_reference()
    ref.load_state_dict(ours.state_dict())
    gts = [gt([[8, 8, 44, 40], [30, 30, 31, 31]]), gt([])]
    results = []
    for head in (ours, ref):
        cls_scores, bbox_preds = head(feats(2))
        for t in (*cls_scores, *bbox_preds):
            t.retain_grad()
        losses = head.loss_by_feat(cls_scores, bbox_preds, gts, [IMG] * 2)
        (sum(losses['loss_cls']) + sum(losses['loss_bbox'])).backward()
        results.append((losses, [t.grad for t in (*cls_scores, *bbox_preds)]))
    (got, got_grads), (want, want_grads) = results
    assert len(got['loss_cls']) == 1 and len(want['loss_cls']) == 2
    for key in ('loss_cls', 'loss_bbox'):
        torch.testing.assert_close(
            sum(got[key]), sum(want[key]), rtol=1e-5, atol=1e-7)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-9)


class _SpyLoss(torch.nn.Module):
    """Records its calls; sums the logits of non-ignored rows."""

    def __init__(self, needs_num_images):
        super().__init__()
        self.use_sigmoid = True
        self.needs_num_images = needs_num_images
        self.calls = []

    def forward(self, cls, labels, weights, avg_factor=None, **extra):
        self.calls.append((cls, labels, weights, avg_factor, extra))
        return (cls.sum(1) * weights).sum() / avg_factor


@pytest.mark.parametrize('needs_num_images', [False, True])
def test_classification_loss_called_once_image_major(needs_num_images):
    head = MODELS.build(head_cfg())
    head.init_weights()
    head.loss_cls = _SpyLoss(needs_num_images)
    gts = [gt([[4, 4, 36, 40]]), gt([[10, 20, 60, 50], [0, 0, 20, 20]])]
    cls_scores, bbox_preds = head(feats(2))
    head.loss_by_feat(cls_scores, bbox_preds, gts, [IMG] * 2)
    assert len(head.loss_cls.calls) == 1
    cls, labels, weights, avg_factor, extra = head.loss_cls.calls[0]
    assert extra == ({'num_images': 2} if needs_num_images else {})
    num_anchors = (8 * 8 + 4 * 4) * 9
    assert cls.shape == (2 * num_anchors, NUM_CLASSES)
    assert labels.shape == weights.shape == (2 * num_anchors, )
    # image-major: rows of image i are its levels in mmdet's (H, W, A)
    # order, built here independently of the head's code
    anchors, valid = head.get_anchors([(8, 8), (4, 4)], [IMG] * 2,
                                      device='cpu')
    targets = head.get_targets(anchors, valid, gts, [IMG] * 2)
    for i in range(2):
        rows = slice(i * num_anchors, (i + 1) * num_anchors)
        want = torch.cat([
            s[i].reshape(9, NUM_CLASSES,
                         *s.shape[-2:]).permute(2, 3, 0,
                                                1).reshape(-1, NUM_CLASSES)
            for s in cls_scores
        ])
        torch.testing.assert_close(cls[rows], want)
        torch.testing.assert_close(labels[rows],
                                   torch.cat([t[i] for t in targets[0]]))
        torch.testing.assert_close(weights[rows],
                                   torch.cat([t[i] for t in targets[1]]))
    assert float(avg_factor) == float(targets[4])
    assert (labels < NUM_CLASSES).sum() == float(targets[4])


def test_get_targets_passes_mmdet_extra_returns_through():
    """mmdet appends sampling results (and user-added returns) after
    avg_factor; the global normaliser must not drop them."""
    head = MODELS.build(head_cfg())
    gts = [gt([[8, 8, 44, 40]]), gt([])]
    anchors, valid = head.get_anchors([(8, 8), (4, 4)], [IMG] * 2,
                                      device='cpu')
    targets = head.get_targets(
        anchors, valid, gts, [IMG] * 2, return_sampling_results=True)
    assert len(targets) == 6
    results = targets[5]
    assert len(results) == 2
    assert all(isinstance(r, SamplingResult) for r in results)
    num_pos = sum(len(r.pos_inds) for r in results)
    assert num_pos > 0 and float(targets[4]) == num_pos


@pytest.mark.parametrize('init_cfg', [
    dict(type='Normal', layer='Conv2d', std=0.01),
    [dict(type='Normal', layer='Conv2d', std=0.01)],
    dict(type='Xavier', layer='Conv2d'),
    None,
])
@pytest.mark.parametrize('prior', [0.01, 0.3, None])
def test_explicit_init_cfg_keeps_the_prior(init_cfg, prior):
    """An init_cfg without an override for retina_cls used to leave its
    bias at the init_cfg's value (0): the prior was lost silently."""
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # nothing to warn about here
        head = MODELS.build(head_cfg(init_cfg=init_cfg, prior_prob=prior))
    head.init_weights()
    expected = 0.0 if prior is None else -math.log((1 - prior) / prior)
    torch.testing.assert_close(head.retina_cls.bias,
                               torch.full_like(head.retina_cls.bias, expected))


@pytest.mark.parametrize('override', [
    dict(type='Normal', name='retina_cls', std=0.01, bias_prob=0.2),
    dict(type='Normal', name='retina_cls', std=0.01, bias=-1.0),
])
def test_conflicting_init_cfg_bias_warns_and_prior_wins(override):
    init_cfg = dict(type='Normal', layer='Conv2d', std=0.01, override=override)
    with pytest.warns(UserWarning, match='prior_prob'):
        head = MODELS.build(head_cfg(init_cfg=init_cfg, prior_prob=0.01))
    head.init_weights()
    torch.testing.assert_close(
        head.retina_cls.bias,
        torch.full_like(head.retina_cls.bias, -math.log(99)))


def test_matching_init_cfg_bias_does_not_warn():
    """mmdet's own RetinaHead init_cfg (bias_prob=0.01) agrees."""
    init_cfg = dict(
        type='Normal',
        layer='Conv2d',
        std=0.01,
        override=dict(
            type='Normal', name='retina_cls', std=0.01, bias_prob=0.01))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        head = MODELS.build(head_cfg(init_cfg=init_cfg))
    head.init_weights()
    assert torch.sigmoid(head.retina_cls.bias).mean().item() == \
        pytest.approx(0.01)


def test_pretrained_init_cfg_is_left_to_the_checkpoint(tmp_path):
    donor = MODELS.build(head_cfg())
    donor.init_weights()
    with torch.no_grad():
        donor.retina_cls.bias.fill_(0.5)
    path = str(tmp_path / 'head.pth')
    torch.save({'state_dict': donor.state_dict()}, path)
    head = MODELS.build(
        head_cfg(init_cfg=dict(type='Pretrained', checkpoint=path)))
    head.init_weights()
    torch.testing.assert_close(head.retina_cls.bias,
                               torch.full_like(head.retina_cls.bias, 0.5))
