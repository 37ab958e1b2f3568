"""The configs of mmdet's released weights (``configs/pretrained/``) build
mmdet's RetinaNet out of our components (``FocalRetinaHead``,
``FocalFamilyLoss``): against mmdet's own model, built from mmdet's own
config (the independent implementation: ``RetinaHead`` + ``FocalLoss``,
whose CPU path is mmdet's Python one-hot code) and holding the same
weights, the head outputs, the detections, the logged losses and every
parameter's gradient are the same, and a seed gives the same initial
weights.

Inputs: two images of 128 x 96 and 80 x 64 px, the first with three boxes
(one of them one pixel), the second with none, so that mmdet's per-GPU
normaliser (sum over images of max(num_pos, 1)) differs from the paper's.
"""
import os.path as osp
from typing import Dict, Tuple

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.structures import InstanceData
from torch import nn

from projects.focal_retina.losses.focal_loss import FocalFamilyLoss
from projects.focal_retina.models.retina_head import FocalRetinaHead
from tests.conftest import ROOT

register_all_modules()
MMDET_RETINANET = osp.join(
    osp.dirname(__import__('mmdet').__file__), '.mim', 'configs', 'retinanet')
PRETRAINED = osp.join(ROOT, 'configs', 'pretrained')
R18 = 'retinanet_r18_fpn_1x_coco.py'
R50 = 'retinanet_r50_fpn_1x_coco.py'
# (height, width) of the two images; boxes (x1, y1, x2, y2) and labels of
# the first (the one-pixel box at (30, 30)); the second has no box.
SHAPES = [(96, 128), (64, 80)]
BOXES = [[[10., 12., 60., 50.], [30., 30., 31., 31.], [70., 20., 120., 90.]],
         []]
LABELS = [[0, 5, 79], []]


def build(cfg_path: str, **model_overrides) -> nn.Module:
    """The model of a config, on the CPU, without fetching the backbone."""
    cfg = Config.fromfile(cfg_path)
    cfg.model.backbone.init_cfg = None
    cfg.merge_from_dict(dict(model=model_overrides))
    return MODELS.build(cfg.model).to('cpu')


def pair(name: str = R18, **overrides) -> Tuple[nn.Module, nn.Module]:
    """mmdet's model from mmdet's config and ours from configs/pretrained,
    holding the same weights: mmdet's initial ones, the output biases moved
    so that scores spread over (0, 1) and boxes move off their anchors
    (with the prior alone every score is ~0.01 and nothing is detected),
    and the towers He-initialised, so that they pass on differences in
    their input (the std of 0.01 shrinks them ~2x per conv)."""
    torch.manual_seed(0)
    ref = build(osp.join(MMDET_RETINANET, name))
    ref.init_weights()
    with torch.no_grad():
        head = ref.bbox_head
        for conv in [*head.cls_convs, *head.reg_convs]:
            nn.init.kaiming_normal_(conv.conv.weight)
        head.retina_cls.bias.uniform_(-4.0, 1.0)
        head.retina_reg.bias.normal_(0.0, 0.2)
    ours = build(osp.join(PRETRAINED, name), **overrides)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def batch(model: nn.Module,
          training: bool,
          dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, list]:
    """The two images through the model's data preprocessor."""
    gen = torch.Generator().manual_seed(1)
    samples = []
    for (h, w), boxes, labels in zip(SHAPES, BOXES, LABELS):
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.long))
        samples.append(sample)
    inputs = [
        torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
        for h, w in SHAPES
    ]
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), training)
    return data['inputs'].to(dtype), data['data_samples']


def losses(model: nn.Module,
           dtype: torch.dtype) -> Tuple[Dict[str, list], Dict[str, float]]:
    """The loss dict the head returns and what the runner logs from it,
    after a backward pass of the total (gradients left in ``.grad``)."""
    model.train()
    model.to(dtype)
    inputs, samples = batch(model, True, dtype)
    raw = model.loss(inputs, samples)
    total, log_vars = model.parse_losses(raw)
    total.backward()
    return raw, log_vars


def grads(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {
        name: p.grad
        for name, p in model.named_parameters() if p.grad is not None
    }


def test_the_configs_build_our_head_and_fused_loss():
    ref, ours = pair()
    assert type(ref.bbox_head).__name__ == 'RetinaHead'
    assert type(ref.bbox_head.loss_cls).__name__ == 'FocalLoss'
    assert isinstance(ours.bbox_head, FocalRetinaHead)
    assert isinstance(ours.bbox_head.loss_cls, FocalFamilyLoss)
    assert ours.bbox_head.normalizer == 'per_gpu'
    assert type(ours.bbox_head.loss_bbox).__name__ == 'L1Loss'
    assert not ours.neck.relu_before_extra_convs


def test_r50_has_mmdets_354_keys_and_shapes():
    ref = build(osp.join(MMDET_RETINANET, R50))
    ours = build(osp.join(PRETRAINED, R50))
    want = {k: v.shape for k, v in ref.state_dict().items()}
    got = {k: v.shape for k, v in ours.state_dict().items()}
    assert list(got) == list(want) and got == want
    assert len(got) == 354
    ours.load_state_dict(ref.state_dict(), strict=True)


def test_a_seed_gives_mmdets_initial_weights():
    """mmdet's init_cfg draws retina_cls a second time (its override), so
    the config restates it: otherwise that conv's weights differ."""
    models = []
    for path in (osp.join(MMDET_RETINANET, R18), osp.join(PRETRAINED, R18)):
        torch.manual_seed(0)
        model = build(path)
        model.init_weights()
        models.append(model.state_dict())
    ref, ours = models
    assert list(ref) == list(ours)
    differ = [k for k in ref if not torch.equal(ref[k], ours[k])]
    assert differ == []
    assert ours['bbox_head.retina_cls.bias'][0].item() == pytest.approx(
        -4.59511985)  # -ln 99: the prior 0.01


def test_head_outputs_equal_mmdets():
    ref, ours = pair()
    ref.eval(), ours.eval()
    inputs, _ = batch(ref, False)
    with torch.no_grad():
        want = (ref.extract_feat(inputs), *ref._forward(inputs))
        got = (ours.extract_feat(inputs), *ours._forward(inputs))
    for kind, w_levels, g_levels in zip(('P3-P7', 'cls', 'reg'), want, got):
        assert len(g_levels) == len(w_levels) == 5, kind
        for w, g in zip(w_levels, g_levels):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-5, msg=kind)


def test_detections_are_identical():
    ref, ours = pair()
    ref.eval(), ours.eval()
    inputs, samples = batch(ref, False)
    with torch.no_grad():
        want = ref.predict(inputs, samples)
        got = ours.predict(inputs, samples)
    found = 0
    for w, g in zip(want, got):
        w, g = w.pred_instances, g.pred_instances
        found += len(w)
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(g[key], w[key]), key
    assert found > 0  # otherwise the comparison says nothing


@pytest.mark.parametrize('dtype,rtol,atol', [
    (torch.float64, 1e-10, 1e-12),
    (torch.float32, 1e-5, 1e-7),
])
def test_losses_and_gradients_equal_mmdets(dtype, rtol, atol):
    """What the runner logs (loss, loss_cls, loss_bbox) and the gradient of
    every trained parameter, to 1e-5 (1e-10 in float64). mmdet's head
    returns one loss per FPN level, ours one over all levels; the runner
    sums the list (BaseModel.parse_losses), so the logs have the same keys
    and values and the sums are the comparable quantity."""
    ref, ours = pair()
    raw_want, want = losses(ref, dtype)
    raw_got, got = losses(ours, dtype)
    assert list(got) == list(want)
    assert sorted(want) == ['loss', 'loss_bbox', 'loss_cls']
    for key in want:
        assert got[key].item() == pytest.approx(
            want[key].item(), rel=rtol, abs=atol), key
    assert want['loss_bbox'] > 0 and want['loss_cls'] > 0
    for key in ('loss_cls', 'loss_bbox'):
        assert len(raw_want[key]) == 5 and len(raw_got[key]) == 1
        torch.testing.assert_close(
            raw_got[key][0], sum(raw_want[key]), rtol=rtol, atol=atol)

    g_want, g_got = grads(ref), grads(ours)
    trained = [n for n, p in ref.named_parameters() if p.requires_grad]
    assert sorted(g_want) == sorted(g_got) == sorted(trained)
    for name in g_want:
        torch.testing.assert_close(
            g_got[name], g_want[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize('overrides,what', [
    (dict(bbox_head=dict(normalizer='global')), 'loss'),
    (dict(neck=dict(relu_before_extra_convs=True)), 'outputs'),
])
def test_the_comparison_sees_the_paper_settings(overrides, what):
    """The paper's normaliser (positives of the batch, without mmdet's 1 for
    the image with no box) and its ReLU before P7 each change what the
    tests above compare."""
    ref, ours = pair(**overrides)
    if what == 'loss':
        want = float(losses(ref, torch.float64)[1]['loss_cls'])
        got = float(losses(ours, torch.float64)[1]['loss_cls'])
        assert got != pytest.approx(want, rel=1e-3)
        return
    ref.eval(), ours.eval()
    inputs, _ = batch(ref, False)
    with torch.no_grad():
        want, got = ref._forward(inputs)[0], ours._forward(inputs)[0]
    torch.testing.assert_close(got[3], want[3])  # P6: before the ReLU
    assert not torch.allclose(got[4], want[4], atol=1e-5)  # P7
