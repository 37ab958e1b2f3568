"""``--fuse-conv-bn``: folding BatchNorm into the convs keeps the
detections of the unfolded model (mmdet's own eval-mode BatchNorm is the
reference) and leaves no BatchNorm behind."""
import copy
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

import projects.focal_retina  # noqa: F401  (registers components)
from projects.focal_retina.engine.fuse import (FuseConvBNHook,
                                               count_batch_norms,
                                               fuse_for_inference)
from tests.conftest import ROOT

DEMO = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py')


def demo_model(seed: int = 0) -> torch.nn.Module:
    """The demo RetinaNet (ResNet-18, BatchNorm) with random weights and
    random BatchNorm statistics, so that folding has something to fold."""
    init_default_scope('mmdet')
    cfg = Config.fromfile(DEMO)
    cfg.model.test_cfg.score_thr = 0.0  # an untrained model scores low
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.to('cpu').eval()


def predict(model, images: torch.Tensor):
    samples = [
        DetDataSample(
            metainfo=dict(
                img_shape=tuple(images.shape[-2:]),
                ori_shape=tuple(images.shape[-2:]),
                scale_factor=(1., 1.))) for _ in range(len(images))
    ]
    with torch.no_grad():
        return model(images, samples, mode='predict')


def test_folding_keeps_the_detections():
    model = demo_model()
    fused = copy.deepcopy(model)
    # ResNet-18: the stem, 2 per basic block (8 blocks), 3 downsamples
    assert count_batch_norms(model) == 1 + 2 * 8 + 3
    assert fuse_for_inference(fused) == 20
    assert count_batch_norms(fused) == 0
    images = torch.randn(
        2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    ref, out = predict(model, images), predict(fused, images)
    with torch.no_grad():  # the raw head outputs, before any top-k
        raw_ref = model(images, mode='tensor')
        raw_out = fused(images, mode='tensor')
    for a, b in zip(raw_ref[0] + raw_ref[1], raw_out[0] + raw_out[1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    for r, o in zip(ref, out):
        r, o = r.pred_instances, o.pred_instances
        assert len(r) == len(o) > 0
        torch.testing.assert_close(o.scores, r.scores, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(o.bboxes, r.bboxes, rtol=1e-4, atol=1e-3)
        assert torch.equal(o.labels, r.labels)


def test_folding_puts_the_model_in_eval_mode_and_freezes_it():
    model = demo_model().train()  # training BatchNorm is not an affine map
    fuse_for_inference(model)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_model_without_batch_norm_is_left_alone():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(2, 8), torch.nn.ReLU())
    before = copy.deepcopy(net.state_dict())
    assert fuse_for_inference(net) == 0
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_hook_folds_the_runner_model_before_test():

    class FakeRunner:
        model = demo_model()
        logger = MMLogger.get_instance('test_fuse')

    runner = FakeRunner()
    FuseConvBNHook().before_test(runner)
    assert count_batch_norms(runner.model) == 0


@pytest.mark.parametrize('phase', ['before_train', 'before_val'])
def test_hook_does_not_fold_while_training(phase):
    model = demo_model()

    class FakeRunner:
        pass

    runner = FakeRunner()
    runner.model = model
    getattr(FuseConvBNHook(), phase)(runner)
    assert count_batch_norms(model) == 20
