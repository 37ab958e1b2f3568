"""--amp: bfloat16 autocast around the forward on CPU, mmengine's float16
AmpOptimWrapper elsewhere; the device is an argument, whatever
``torch.cuda.is_available()`` says."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from projects.focal_retina.engine.cli import enable_amp
from projects.focal_retina.engine.optim_wrapper import CPUBF16OptimWrapper

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')


def sgd_cfg(wrapper='OptimWrapper'):
    return Config(
        dict(
            optim_wrapper=dict(
                type=wrapper, optimizer=dict(type='SGD', lr=0.1))))


def test_cpu_bf16_wrapper_autocasts_forward_only(cuda_visible):
    model = torch.nn.Linear(8, 2)
    cfg = sgd_cfg()
    enable_amp(cfg, 'cpu')
    assert cfg.optim_wrapper.type == 'CPUBF16OptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper  # bf16: no loss scaling
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    x = torch.randn(4, 8, device='cpu')
    with wrapper.optim_context(model):
        y = model(x)
    assert y.dtype == torch.bfloat16
    assert model(x).dtype == torch.float32  # outside the context
    before = model.weight.detach().clone()
    wrapper.update_params(y.float().pow(2).mean())
    assert model.weight.dtype == torch.float32
    assert not torch.equal(before, model.weight)


def test_enable_amp_follows_the_device_argument(cuda_visible):
    cfg = sgd_cfg()
    enable_amp(cfg, 'cuda')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    for device in ('npu', 'mlu'):  # the devices AmpOptimWrapper supports
        cfg = sgd_cfg()
        enable_amp(cfg, device)
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


def test_enable_amp_keeps_existing_amp_and_refuses_unknown():
    for wrapper in ('CPUBF16OptimWrapper', 'AmpOptimWrapper'):
        cfg = sgd_cfg(wrapper)
        enable_amp(cfg, 'cuda' if wrapper == 'CPUBF16OptimWrapper' else 'cpu')
        assert cfg.optim_wrapper.type == wrapper  # the user's choice stays
    with pytest.raises(SystemExit):  # a one-line error naming the type
        enable_amp(sgd_cfg('MyWrapper'), 'cpu')


def test_cpu_bf16_wrapper_refuses_parameters_off_the_cpu():
    """CPU autocast would silently leave a GPU model in float32."""
    model = torch.nn.Linear(8, 2, device='meta')
    with pytest.raises(ValueError, match='parameter is on meta'):
        CPUBF16OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))


@needs_cuda
def test_cuda_amp_forward_is_float16():
    """GPU --amp: mmengine's AmpOptimWrapper, forward in float16."""
    model = torch.nn.Linear(8, 2).cuda()
    cfg = sgd_cfg()
    enable_amp(cfg, 'cuda')
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    with wrapper.optim_context(model):
        y = model(torch.randn(4, 8, device='cuda'))
    assert y.dtype == torch.float16
    with pytest.raises(ValueError, match='parameter is on cuda'):
        CPUBF16OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
