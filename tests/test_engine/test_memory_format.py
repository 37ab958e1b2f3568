"""``ChannelsLastHook``: the model trains channels-last under CPU bf16
autocast only (unless ``when='always'``) and is tested channels-last; the
optimizer keeps driving the converted parameters; and the channels-last
model computes what mmdet's stock model computes: head outputs, detections,
losses and gradients to float rounding (the reference is mmdet's own
RetinaNet from mmdet's own config, as in test_stock_equivalence.py)."""
import copy
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from projects.focal_retina.engine.checkpoint import safe_load
from projects.focal_retina.engine.memory_format import (
    ChannelsLastHook, channels_last_for_inference, to_channels_last)
from projects.focal_retina.engine.optim_wrapper import CPUBF16OptimWrapper
from tests.conftest import ROOT
from tests.test_models.test_stock_equivalence import batch, grads, losses, pair

CL = torch.channels_last


class ConvToy(BaseModel):
    """Two convolutions and a linear layer (a 2-d weight the hook leaves)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.conv2(self.conv1(inputs).relu())
        out = self.fc(x.mean((2, 3)))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


def channels_last(model: nn.Module) -> bool:
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs
    return all(p.is_contiguous(memory_format=CL) for p in convs)


def fake_runner(model, wrapper=None):
    return SimpleNamespace(
        model=model,
        optim_wrapper=wrapper,
        logger=MMLogger.get_current_instance())


def wrapped(model, bf16: bool):
    cls = CPUBF16OptimWrapper if bf16 else OptimWrapper
    return cls(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.parametrize('when,bf16,converted', [
    ('bf16', True, True),
    ('bf16', False, False),
    ('always', False, True),
    ('always', True, True),
])
def test_training_converts_under_bf16_or_always(when, bf16, converted):
    model = ConvToy()
    wrapper = wrapped(model, bf16)
    weight = model.conv1.weight
    ChannelsLastHook(when=when).before_train(fake_runner(model, wrapper))
    assert channels_last(model) == converted
    assert model.fc.weight.is_contiguous()  # 2-d: untouched
    # the optimizer built before the hook still holds the model's tensors
    assert model.conv1.weight is weight
    assert wrapper.optimizer.param_groups[0]['params'][0] is weight
    before = weight.detach().clone()
    x = torch.randn(2, 3, 8, 8, device='cpu')
    with wrapper.optim_context(model):
        loss = model(x, mode='loss')['loss']
    wrapper.update_params(loss.float())
    assert not torch.equal(before, model.conv1.weight)
    assert channels_last(model) == converted  # the step keeps the layout


@pytest.mark.parametrize('test,converted', [(True, True), (False, False)])
def test_testing_converts_unless_switched_off(test, converted):
    model = ConvToy()
    ChannelsLastHook(test=test).before_test(fake_runner(model))
    assert channels_last(model) == converted


@pytest.mark.parametrize('hooks,converted', [
    ([dict(type='ChannelsLastHook', when='bf16')], True),
    ([dict(type='ChannelsLastHook', test=False)], False),
    ([dict(type='NonFiniteGuardHook')], False),
    (None, False),
])
def test_inference_without_a_runner_follows_the_config(hooks, converted):
    """tools that run a config's model without a Runner (DetInferencer)
    convert it as before_test would."""
    model = ConvToy()
    cfg = Config(dict(custom_hooks=hooks) if hooks is not None else {})
    assert channels_last_for_inference(cfg, model) == converted
    assert channels_last(model) == converted


def test_bad_setting_is_a_clear_error():
    with pytest.raises(ValueError, match=r"when='fp16'.*'bf16', 'always'"):
        ChannelsLastHook(when='fp16')


def test_runner_applies_it_after_building_the_bf16_wrapper(tmp_path):
    """Through mmengine's Runner and config: --amp's wrapper type makes the
    model train channels-last; the run's checkpoint loads into an NCHW
    model."""
    runner = Runner(
        model=ConvToy(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.randn(3, 8, 8)) for _ in range(4)],
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2),
        optim_wrapper=dict(
            type='CPUBF16OptimWrapper', optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=10**6),
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False)),
        custom_hooks=[dict(type='ChannelsLastHook')],
        experiment_name='channels_last_runner')
    runner.train()
    assert channels_last(runner.model)
    fresh = ConvToy()
    state = safe_load(
        osp.join(str(tmp_path), 'iter_2.pth'), map_location='cpu')
    fresh.load_state_dict(state['state_dict'])
    torch.testing.assert_close(fresh.conv1.weight, runner.model.conv1.weight)
    assert fresh.conv1.weight.is_contiguous()


@pytest.mark.parametrize('path', [
    'configs/pretrained/retinanet_r18_fpn_1x_coco.py',
    'configs/pretrained/retinanet_r50_fpn_1x_coco.py',
    'configs/pretrained/retinanet_r101_fpn_1x_coco.py',
    'configs/own_data/retinanet_r18_fpn_own_data_coco.py',
    'configs/own_data/retinanet_r50_fpn_own_data_coco.py',
])
def test_the_coco_configs_carry_the_hook(path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    found = [h for h in cfg.custom_hooks if h['type'] == 'ChannelsLastHook']
    assert found == [dict(type='ChannelsLastHook', when='bf16')]
    hook = HOOKS.build(found[0])
    assert (hook.when, hook.test) == ('bf16', True)


def test_head_outputs_and_detections_equal_mmdets():
    """Testing channels-last: the same outputs to 1e-5 and the same
    detections (boxes to 1e-3 px, scores to 1e-5: the sums run in another
    order, so not bit for bit)."""
    ref, ours = pair()
    ref.eval(), ours.eval()
    ChannelsLastHook().before_test(fake_runner(ours))
    assert channels_last(ours)
    inputs, samples = batch(ref, False)
    with torch.no_grad():
        want = (ref.extract_feat(inputs), *ref._forward(inputs))
        got = (ours.extract_feat(inputs), *ours._forward(inputs))
        assert got[1][0].is_contiguous(memory_format=CL)  # NHWC all along
        for w_levels, g_levels in zip(want, got):
            for w, g in zip(w_levels, g_levels):
                torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
        dets_want = ref.predict(inputs, copy.deepcopy(samples))
        dets_got = ours.predict(inputs, copy.deepcopy(samples))
    found = 0
    for w, g in zip(dets_want, dets_got):
        w, g = w.pred_instances, g.pred_instances
        found += len(w)
        assert torch.equal(g.labels, w.labels)
        torch.testing.assert_close(g.bboxes, w.bboxes, rtol=0, atol=1e-3)
        torch.testing.assert_close(g.scores, w.scores, rtol=0, atol=1e-5)
    assert found > 0


def test_losses_and_gradients_equal_mmdets():
    """Training channels-last in float32 ('always'): what the runner logs
    and every parameter's gradient equal mmdet's NCHW model's to 1e-5."""
    ref, ours = pair()
    ChannelsLastHook(
        when='always').before_train(fake_runner(ours, wrapped(ours, False)))
    assert channels_last(ours)
    _, want = losses(ref, torch.float32)
    _, got = losses(ours, torch.float32)
    assert channels_last(ours)  # losses() casts: the layout stays
    for key in want:
        assert got[key].item() == pytest.approx(
            want[key].item(), rel=1e-5), key
    g_want, g_got = grads(ref), grads(ours)
    assert sorted(g_got) == sorted(g_want)
    for name in g_want:
        torch.testing.assert_close(
            g_got[name], g_want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_channels_last_is_bf16_nchw_to_bf16_rounding():
    """Under bf16 autocast the channels-last model's losses are the NCHW
    model's to bf16 rounding, and its gradients point the same way."""
    _, nchw = pair()
    ours = copy.deepcopy(nchw)
    to_channels_last(ours)
    results = []
    for model in (nchw, ours):
        model.train()
        inputs, samples = batch(model, True)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            raw = model.loss(inputs, samples)
        total, log_vars = model.parse_losses(raw)
        total.backward()
        results.append((log_vars, grads(model)))
    (want, g_want), (got, g_got) = results
    for key in want:
        assert got[key].item() == pytest.approx(
            want[key].item(), rel=2e-2), key
    flat = [
        torch.cat([g[k].flatten() for k in sorted(g)]) for g in (g_want, g_got)
    ]
    cos = torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0)
    assert cos > 0.99
