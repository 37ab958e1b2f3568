"""The DR-loss configs (configs/dr_loss/) hold the public code's settings
(idstcv/DR_loss configs/dr_retina/*.yaml on maskrcnn-benchmark) and a
RetinaNet with the DR loss trains."""
import math
import os.path as osp

import pytest
import torch
from mmdet.models.dense_heads.anchor_head import AnchorHead
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import PARAM_SCHEDULERS
from mmengine.structures import InstanceData

from projects.focal_retina.losses import DRLoss
from projects.focal_retina.models import FocalRetinaHead
from tests.conftest import ROOT

register_all_modules()
DR = osp.join(ROOT, 'configs', 'dr_loss')
R50 = osp.join(DR, 'retina_r50_fpn_1x_dr.py')
R101 = osp.join(DR, 'retina_r101_fpn_2x_ms_dr.py')
# The head computes loss_cls once over all levels (FocalRetinaHead
# overrides loss_by_feat); mmdet's per-level loop cannot host the DR loss.
HEAD_SUMS_ONCE = FocalRetinaHead.loss_by_feat is not AnchorHead.loss_by_feat


def _load(path: str) -> Config:
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # no pretrained weights here
    return cfg


def _schedule(cfg: Config) -> tuple:
    """(warm-up start factor, warm-up iterations, lr steps) of the
    schedulers built as the Runner builds them (``end`` = max_iters)."""
    optim = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    warm, steps = (
        PARAM_SCHEDULERS.build(
            dict(
                s, end=s.get('end', cfg.train_cfg.max_iters), optimizer=optim))
        for s in cfg.param_scheduler)
    assert type(warm).__name__.endswith('LinearLR') and warm.begin == 0
    assert type(steps).__name__.endswith('MultiStepLR') and steps.gamma == 0.1
    return warm.start_factor, warm.end, sorted(steps.milestones)


@pytest.mark.parametrize('path', [R50, R101], ids=osp.basename)
def test_configs_build(path):
    cfg = _load(path)
    model = MODELS.build(cfg.model)
    model.init_weights()
    head = model.bbox_head
    assert isinstance(head.loss_cls, DRLoss)
    assert head.cls_out_channels == 80  # sigmoid classifier, K outputs
    # prior 0.5: bias -log((1 - 0.5) / 0.5) = 0
    assert head.retina_cls.bias.abs().max() == 0


def test_r50_config_resolves_to_public_code_settings():
    cfg = _load(R50)
    m = cfg.model
    assert m.backbone.depth == 50
    h = m.bbox_head
    assert h.type == 'FocalRetinaHead' and h.prior_prob == 0.5
    loss = h.loss_cls
    assert loss.type == 'DRLoss' and loss.use_sigmoid
    assert (loss.margin, loss.pos_lambda, loss.L, loss.tau) == \
        (0.5, 1.0, 6.0, 4.0)
    assert loss.neg_lambda == pytest.approx(0.1 / math.log(3.5), rel=1e-15)
    assert loss.grouping == 'per_batch'
    assert set(loss) == {
        'type', 'use_sigmoid', 'margin', 'pos_lambda', 'neg_lambda', 'L',
        'tau', 'grouping'
    }  # nothing of the focal loss left over (_delete_)
    built = MODELS.build(loss)
    assert (built.margin, built.L, built.tau) == (0.5, 6.0, 4.0)
    # IoU 0.5 / 0.5 with low-quality matches: no ignore band
    a = m.train_cfg.assigner
    assert (a.type, a.pos_iou_thr, a.neg_iou_thr) == \
        ('MaxIoUAssigner', 0.5, 0.5)
    assert a.min_pos_iou == 0.0 and a.match_low_quality is True
    # box loss and coder as maskrcnn-benchmark's RetinaNet
    assert h.loss_bbox.type == 'SmoothL1Loss' and h.loss_bbox.beta == 0.11
    assert h.loss_bbox.loss_weight == 0.25  # / (4 num_pos)
    assert h.bbox_coder.type == 'DeltaXYWHBBoxCoder'
    assert h.bbox_coder.target_stds == [0.1, 0.1, 0.2, 0.2]  # (10,10,5,5)
    assert h.bbox_coder.target_means == [0.0, 0.0, 0.0, 0.0]
    t = m.test_cfg
    assert (t.score_thr, t.nms.type, t.nms.iou_threshold) == \
        (0.2, 'nms', 0.5)
    assert (t.nms_pre, t.max_per_img) == (1000, 100)
    # 1x: 90k iterations, lr 0.01 / 10 at 60k and 80k, 16 images,
    # linear warm-up over 500 iterations from lr / 3
    assert cfg.train_cfg.max_iters == 90000
    assert _schedule(cfg) == (1.0 / 3, 500, [60000, 80000])
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == \
        ('SGD', 0.01, 0.9, 1e-4)
    pw = cfg.optim_wrapper.paramwise_cfg
    assert (pw.bias_lr_mult, pw.bias_decay_mult) == (2.0, 0.0)
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.train_pipeline[2].scale == (1333, 800)


def test_r50_assigner_has_no_ignore_band():
    """An anchor at IoU 0.45 is background (0.5/0.4 would ignore it), one
    at 0.5 is foreground, and a box whose best anchor has IoU 0.3 still
    gets it (low-quality match)."""
    assigner = TASK_UTILS.build(_load(R50).model.train_cfg.assigner)
    gt = InstanceData(
        bboxes=torch.tensor([[0., 0., 10., 10.], [100., 100., 110., 110.]]),
        labels=torch.tensor([3, 5]))
    priors = torch.tensor([
        [0., 0., 10., 4.5],  # IoU 0.45 with box 0
        [0., 0., 10., 5.],  # IoU 0.5 with box 0
        [100., 100., 103., 110.],  # IoU 0.3 with box 1, its best
        [50., 50., 60., 60.],  # no overlap
    ])
    res = assigner.assign(InstanceData(priors=priors), gt)
    assert res.gt_inds.tolist() == [0, 1, 2, 0]  # 0 = background, no -1


def test_r101_config():
    cfg = _load(R101)
    assert cfg.model.backbone.depth == 101
    assert cfg.model.test_cfg.score_thr == 0.1
    assert cfg.model.bbox_head.loss_cls.type == 'DRLoss'
    assert cfg.model.bbox_head.prior_prob == 0.5
    assert cfg.model.train_cfg.assigner.neg_iou_thr == 0.5
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.type == 'RandomChoiceResize'
    assert [s for s in resize.scales] == [(1333, s)
                                          for s in range(640, 801, 32)]
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (1333, 800)
    # 2x: 180k iterations, lr / 10 at 120k and 160k
    assert cfg.train_cfg.max_iters == 180000
    assert _schedule(cfg) == (1.0 / 3, 500, [120000, 160000])


@pytest.mark.skipif(
    not HEAD_SUMS_ONCE,
    reason='needs FocalRetinaHead.loss_by_feat calling loss_cls once over '
    'all levels (the head contract)')
@pytest.mark.parametrize('grouping', ['per_batch', 'per_image'])
def test_retinanet_with_dr_loss_trains(grouping):
    torch.manual_seed(0)
    cfg = _load(R50)
    cfg.model.bbox_head.loss_cls.grouping = grouping
    # The R-50 config's loss, assigner, coder and prior on a small network
    # (ResNet-18, one 64-channel conv per tower): seconds on a CPU.
    cfg.model.backbone.depth = 18
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.model.neck.out_channels = 64
    cfg.model.bbox_head.update(
        in_channels=64, feat_channels=64, stacked_convs=1)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    calls = []
    loss_cls = model.bbox_head.loss_cls
    forward = loss_cls.forward

    def spy(pred, target, *args, **kwargs):
        calls.append((pred.shape, kwargs.get('num_images')))
        return forward(pred, target, *args, **kwargs)

    loss_cls.forward = spy
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs = demo_mm_inputs(
        2, [[3, 96, 128], [3, 96, 128]], num_items=[3, 0], num_classes=80)
    # 96 x 128 padded to 32: (12*16 + 6*8 + 3*4 + 2*2 + 1*1) * 9 anchors
    anchors = (192 + 48 + 12 + 4 + 1) * 9
    for _ in range(2):
        data = model.data_preprocessor(inputs, True)
        losses = model(**data, mode='loss')
        cls = losses['loss_cls']
        cls = sum(cls) if isinstance(cls, (list, tuple)) else cls
        box = losses['loss_bbox']
        box = sum(box) if isinstance(box, (list, tuple)) else box
        assert torch.isfinite(cls) and cls > 0 and torch.isfinite(box)
        optim.zero_grad()
        (cls + box).backward()
        grad = model.bbox_head.retina_cls.weight.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        optim.step()
    # once per iteration, over all levels of both images
    expected_images = 2 if grouping == 'per_image' else None
    assert calls == [(torch.Size([2 * anchors, 80]), expected_images)] * 2
