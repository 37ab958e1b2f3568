"""Representative configs (every config outside ablations/, the first of
each ablation folder) build and run loss / predict / tensor modes on tiny
inputs; the base configs hold the paper's settings (SPEC.md, Sec. 4 of the
paper) and the loss ablations (Tables 1a, 1b, 3) those of their row."""
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config

from tests.conftest import ROOT

register_all_modules()
ALL_CONFIGS = sorted(
    p for p in glob.glob(
        osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)


def _representative(paths):
    """Every config outside ablations/ and the first of each ablation
    folder. The others differ from it only in settings (loss, anchors,
    depth, scale, sampler) that tests/test_configs/test_paper_settings.py
    checks for every config; building and running all of them costs ~10 s
    each (R-50/101 on 2 CPU cores), minutes for the whole set."""
    seen, keep = set(), []
    for p in paths:
        folder = osp.dirname(p)
        if 'ablations' not in p or folder not in seen:
            keep.append(p)
            seen.add(folder)
    return keep


CONFIGS = _representative(ALL_CONFIGS)
IDS = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS]
ABLATIONS = osp.join(ROOT, 'configs', 'ablations')
# (folder, file, expected loss_cls settings): the paper's Tables 1a, 1b, 3.
PAPER_LOSSES = [
    *[('table1a_alpha_ce', f'retina_r50_fpn_600_1x_ce-a{t}.py',
       dict(gamma=0.0, alpha=a, star=False))
      for t, a in [('01', .1), ('025', .25), ('05', .5), (
          '075', .75), ('09', .9), ('099', .99), ('0999', .999)]],
    *[('table1b_gamma_alpha', f'retina_r50_fpn_600_1x_fl-g{t}.py',
       dict(gamma=g, alpha=a, star=False))
      for t, g, a in [('01-a075', .1, .75), ('02-a075', .2, .75),
                      ('05-a05', .5, .5), ('1-a025', 1., .25),
                      ('5-a025', 5., .25)]],
    # (0, .75) is Table 1a's alpha .75 and (2, .25) the ablation default.
    ('table3_fl_star', 'retina_r50_fpn_600_1x_flstar-g2-b1.py',
     dict(gamma=2.0, star_beta=1.0, alpha=0.25, star=True)),
    ('table3_fl_star', 'retina_r50_fpn_600_1x_flstar-g4-b0.py',
     dict(gamma=4.0, star_beta=0.0, alpha=0.25, star=True)),
]


def _milestones(cfg) -> list:
    """The lr steps in iterations (the schedules hold fractions of the run,
    resolved against train_cfg.max_iters)."""
    fractions = cfg.param_scheduler[-1].milestone_fractions
    return [round(f * cfg.train_cfg.max_iters) for f in fractions]


def build_model(path: str):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # no pretrained weights here
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def test_all_leaf_configs_found():
    names = {osp.basename(p) for p in CONFIGS}
    assert {
        'retina_r50_fpn_1x.py', 'retina_r101_fpn_1.5x.py',
        'retina_r18_fpn_shapes.py'
    } <= names


def mm_inputs(shapes, num_items, num_classes):
    """mmdet's demo inputs; its labels are drawn from [1, num_classes), so
    a one-class model (the own-data recipe) gets labels 1, mapped to 0."""
    inputs = demo_mm_inputs(
        len(shapes),
        shapes,
        num_items=num_items,
        num_classes=max(num_classes, 2))
    if num_classes == 1:
        for sample in inputs['data_samples']:
            sample.gt_instances.labels.zero_()
    return inputs


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_config_modes(path):
    torch.manual_seed(0)
    model, cfg = build_model(path)
    num_classes = cfg.model.bbox_head.num_classes
    inputs = mm_inputs([[3, 96, 128], [3, 96, 128]], [3, 0], num_classes)
    data = model.data_preprocessor(inputs, True)

    model.train()
    losses = model.forward(**data, mode='loss')
    loss = sum(
        sum(v) if isinstance(v, list) else v for k, v in losses.items()
        if 'loss' in k)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()

    # an image without boxes: no box loss, but a classification loss
    empty = mm_inputs([[3, 96, 128]], [0], num_classes)
    losses = model.forward(**model.data_preprocessor(empty, True), mode='loss')
    assert sum(losses['loss_bbox']) == 0
    assert sum(losses['loss_cls']) > 0

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(inputs, False)
        preds = model.forward(**data, mode='predict')
        assert len(preds) == 2
        inst = preds[0].pred_instances
        assert inst.bboxes.shape[1] == 4
        assert len(inst) <= cfg.model.test_cfg.max_per_img
        feats = model.forward(data['inputs'], mode='tensor')
    cls_scores, bbox_preds = feats
    assert len(cls_scores) == 5  # P3-P7
    # scales x ratios as the config sets them (3 x 3 = 9 by default)
    ag = cfg.model.bbox_head.anchor_generator
    num_anchors = ag.get('scales_per_octave', len(ag.get('scales', []))) * len(
        ag.ratios)
    assert cls_scores[0].shape[1] == num_anchors * num_classes
    assert bbox_preds[0].shape[1] == num_anchors * 4
    # strides 8..128 on a 96x128 input (padded to a multiple of 32)
    assert [c.shape[-1] for c in cls_scores] == [16, 8, 4, 2, 1]


def test_paper_settings_in_base_model():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py'))
    m = cfg.model
    assert m.backbone.depth == 50
    assert (m.neck.start_level, m.neck.num_outs) == (1, 5)  # P3-P7
    assert m.neck.add_extra_convs == 'on_input'  # P6 from C5
    assert m.neck.relu_before_extra_convs is True  # ReLU before P7
    assert m.neck.out_channels == 256
    h = m.bbox_head
    assert (h.stacked_convs, h.feat_channels) == (4, 256)
    ag = h.anchor_generator
    assert (ag.octave_base_scale, ag.scales_per_octave) == (4, 3)
    assert ag.ratios == [0.5, 1.0, 2.0]
    assert ag.strides == [8, 16, 32, 64, 128]
    assert h.loss_bbox.type == 'SmoothL1Loss' and h.loss_bbox.beta == 0.11
    assert h.type == 'FocalRetinaHead' and h.normalizer == 'global'
    assert h.prior_prob == 0.01
    assert (h.loss_cls.type, h.loss_cls.gamma, h.loss_cls.alpha) == \
        ('FocalFamilyLoss', 2.0, 0.25)
    a = m.train_cfg.assigner
    assert (a.pos_iou_thr, a.neg_iou_thr) == (0.5, 0.4)
    t = m.test_cfg
    assert (t.score_thr, t.nms_pre, t.nms.iou_threshold, t.max_per_img) \
        == (0.05, 1000, 0.5, 100)
    # schedule: 90k iterations, lr 0.01 /10 at 60k, 80k, 16 images
    assert cfg.train_cfg.max_iters == 90000
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.01, 0.9, 1e-4)
    assert _milestones(cfg) == [60000, 80000]
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert [t.type for t in cfg.train_pipeline] == [
        'LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip',
        'PackDetInputs'
    ]  # flip is the only augmentation
    assert cfg.custom_imports.imports == ['projects.focal_retina']


def test_table2_config():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'retina_r101_fpn_1.5x.py'))
    assert cfg.model.backbone.depth == 101
    assert cfg.train_cfg.max_iters == 135000
    assert _milestones(cfg) == [90000, 120000]
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert [s[1] for s in resize.scales] == [640, 672, 704, 736, 768, 800]
    assert all(s[0] == 1333 for s in resize.scales)
    test_resize = cfg.test_dataloader.dataset.pipeline[1]
    assert test_resize.scale == (1333, 800)


def test_p7_takes_relu_of_p6():
    """P7 = conv3x3/2(ReLU(P6)) and P6 = conv3x3/2(C5), as in the paper."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py'))
    neck = MODELS.build(cfg.model.neck).eval()
    torch.manual_seed(0)
    feats = [
        torch.randn(1, c, 64 // 2**i, 64 // 2**i)
        for i, c in enumerate([256, 512, 1024, 2048])
    ]
    with torch.no_grad():
        outs = neck(feats)
        conv6, conv7 = neck.fpn_convs[3].conv, neck.fpn_convs[4].conv
        p6 = conv6(feats[3])
        p7 = conv7(F.relu(p6))
    torch.testing.assert_close(outs[3], p6)
    torch.testing.assert_close(outs[4], p7)
    assert not torch.allclose(outs[4], conv7(p6))


@pytest.mark.parametrize(
    'folder,name,expected', PAPER_LOSSES, ids=[p[1] for p in PAPER_LOSSES])
def test_ablation_loss_settings(folder, name, expected):
    cfg = Config.fromfile(osp.join(ABLATIONS, folder, name))
    loss_cfg = cfg.model.bbox_head.loss_cls
    assert loss_cfg.type == 'FocalFamilyLoss'
    for key, value in expected.items():
        assert loss_cfg.get(key, False) == pytest.approx(value), key
    loss = MODELS.build(loss_cfg)  # hyper-parameters valid
    assert loss.gamma == expected['gamma']
    # ablation default: R-50, 600 px train and test
    assert cfg.model.backbone.depth == 50
    assert cfg.train_dataloader.dataset.pipeline[2].scale == (1000, 600)
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (1000, 600)


def test_every_ablation_config_is_checked():
    listed = {osp.join(ABLATIONS, f, n) for f, n, _ in PAPER_LOSSES}
    loss_configs = {
        p
        for p in ALL_CONFIGS
        if osp.basename(osp.dirname(p)) in ('table1a_alpha_ce',
                                            'table1b_gamma_alpha',
                                            'table3_fl_star')
    }
    assert loss_configs == listed


def test_prior_configs():
    with_prior = Config.fromfile(
        osp.join(ABLATIONS, 'table1a_alpha_ce',
                 'retina_r50_fpn_600_1x_ce-a05.py'))
    no_prior = Config.fromfile(
        osp.join(ABLATIONS, 'prior', 'retina_r50_fpn_600_1x_ce-noprior.py'))
    assert with_prior.model.bbox_head.prior_prob == 0.01
    assert no_prior.model.bbox_head.prior_prob is None
    for cfg in (with_prior, no_prior):
        assert cfg.model.bbox_head.loss_cls.gamma == 0.0
        head = MODELS.build(cfg.model.bbox_head)
        head.init_weights()
        expected = 0.0 if cfg is no_prior else -math.log(99)
        assert head.retina_cls.bias.detach().sub(expected).abs().max() \
            < 1e-6
