"""--amp on CPU: bfloat16 autocast around the forward."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from projects.focal_retina.engine.cli import enable_amp


def test_cpu_bf16_wrapper_autocasts_forward_only():
    model = torch.nn.Linear(8, 2)
    cfg = Config(
        dict(
            optim_wrapper=dict(
                type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'CPUBF16OptimWrapper'
    unknown = Config(dict(optim_wrapper=dict(type='MyWrapper')))
    with pytest.raises(SystemExit):  # one-line error naming the type
        enable_amp(unknown)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    x = torch.randn(4, 8)
    with wrapper.optim_context(model):
        y = model(x)
    assert y.dtype == torch.bfloat16
    assert model(x).dtype == torch.float32  # outside the context
    before = model.weight.detach().clone()
    wrapper.update_params(y.float().pow(2).mean())
    assert model.weight.dtype == torch.float32
    assert not torch.equal(before, model.weight)


def test_enable_amp_keeps_existing_amp_and_refuses_unknown():
    cfg = Config(dict(optim_wrapper=dict(type='CPUBF16OptimWrapper')))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'CPUBF16OptimWrapper'
    unknown = Config(dict(optim_wrapper=dict(type='MyWrapper')))
    with pytest.raises(SystemExit):  # a one-line error naming the type
        enable_amp(unknown)
