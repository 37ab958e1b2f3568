"""Distributed training on CPU (gloo).

Fast, in one process: the wrapper config keeps what mmengine's Runner gives
DDP (``broadcast_buffers=False``, the config's ``find_unused_parameters``,
the user's keys) and a real Runner builds that DDP; the device is an
argument, whatever ``torch.cuda.is_available()`` says (``cuda_visible``).
Slow, in subprocesses: 2 gloo processes x 1 image == 1 process x 2 images,
with the paper's global normaliser; mmdet's per-GPU normaliser does not
agree.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner

from projects.focal_retina.engine.distributed import (
    CPUAwareDistributedDataParallel, cpu_wrapper_cfg, setup_cpu_distributed)
from tests.conftest import free_port

WORKER = osp.join(
    osp.dirname(osp.abspath(__file__)), 'dist_equivalence_worker.py')
CPU_DDP = 'CPUAwareDistributedDataParallel'


@pytest.fixture
def torchrun_env(monkeypatch):
    """The variables torchrun sets, for a one-process gloo group that is
    destroyed afterwards."""
    env = dict(
        RANK='0',
        LOCAL_RANK='0',
        WORLD_SIZE='1',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(free_port()))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert not dist.is_initialized()
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize('find_unused', [True, False, None])
def test_default_wrapper_is_mmengines(find_unused):
    """No model_wrapper_cfg: what Runner.wrap_model would build itself."""
    cfg = Config({} if find_unused is None else dict(
        find_unused_parameters=find_unused))
    assert cpu_wrapper_cfg(cfg) == dict(
        type=CPU_DDP,
        broadcast_buffers=False,
        find_unused_parameters=bool(find_unused))


@pytest.mark.parametrize('given', [
    dict(broadcast_buffers=True, bucket_cap_mb=5),
    dict(type='MMDistributedDataParallel', find_unused_parameters=True),
    dict(),
])
def test_user_wrapper_keys_are_kept(given):
    """A user's model_wrapper_cfg: mmengine adds nothing, nor do we."""
    cfg = Config(dict(model_wrapper_cfg=given, find_unused_parameters=True))
    expected = dict(given, type=CPU_DDP)
    assert cpu_wrapper_cfg(cfg) == expected
    other = Config(dict(model_wrapper_cfg=dict(type='MyWrapper', x=1)))
    assert cpu_wrapper_cfg(other) == dict(type='MyWrapper', x=1)


def test_setup_on_cpu_creates_gloo_group(torchrun_env, cuda_visible):
    cfg = Config(
        dict(
            find_unused_parameters=True,
            env_cfg=dict(cudnn_benchmark=False,
                         dist_cfg=dict(backend='nccl'))))
    assert setup_cpu_distributed(cfg, 'pytorch', device='cpu') is True
    assert dist.is_initialized() and dist.get_backend() == 'gloo'
    assert cfg.env_cfg == dict(
        cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
    assert cfg.model_wrapper_cfg == dict(
        type=CPU_DDP, broadcast_buffers=False, find_unused_parameters=True)


def test_other_devices_are_left_to_mmengine(monkeypatch, cuda_visible):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    for launcher, device in [('pytorch', 'cuda'), ('slurm', 'cuda'),
                             ('none', 'cpu')]:
        assert setup_cpu_distributed(cfg, launcher, device) is False
    assert cfg.to_dict() == dict(env_cfg=dict(dist_cfg=dict(backend='nccl')))
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match='needs RANK, WORLD_SIZE'):
        setup_cpu_distributed(cfg, 'pytorch', 'cpu')
    with pytest.raises(RuntimeError, match='only .pytorch.'):
        setup_cpu_distributed(cfg, 'slurm', 'cpu')


class OneUnusedBranch(BaseModel):
    """A model with a parameter outside the graph: DDP then needs
    ``find_unused_parameters=True`` from the second step on."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(4, 1)
        self.unused = nn.Linear(4, 1)
        self.register_buffer('steps', torch.zeros(()))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.used(inputs)
        if mode == 'loss':
            self.steps += 1
            return dict(loss=out.pow(2).mean())
        return out


def test_runner_ddp_gets_the_config_settings(torchrun_env, tmp_path,
                                             monkeypatch):
    """find_unused_parameters=True in the config reaches the DDP module
    the Runner builds, and training with an unused parameter works."""
    # Pin the Runner's device as CUDA_VISIBLE_DEVICES='' would on a GPU host.
    monkeypatch.setattr('mmengine.runner.runner.get_device', lambda: 'cpu')
    cfg = Config(
        dict(
            find_unused_parameters=True,
            env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert setup_cpu_distributed(cfg, 'pytorch', device='cpu')
    runner = Runner(
        model=OneUnusedBranch(),
        work_dir=str(tmp_path),
        launcher='pytorch',
        env_cfg=cfg.env_cfg,
        # the project's scope: a Runner makes its scope the process's
        # current one, which later mmdet builds in this process rely on
        default_scope='mmdet',
        cfg=cfg)  # the Runner reads model_wrapper_cfg from here
    ddp = runner.model
    assert type(ddp) is CPUAwareDistributedDataParallel
    assert ddp.find_unused_parameters is True
    assert ddp.broadcast_buffers is False
    assert ddp.device_ids is None  # a CPU module
    optim = OptimWrapper(torch.optim.SGD(ddp.parameters(), lr=0.1))
    for _ in range(3):  # without find_unused_parameters: error at step 2
        ddp.train_step(dict(inputs=torch.randn(2, 4)), optim)
    assert ddp.module.steps.item() == 3


def run(out: str, normalizer: str, nproc: int) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')
    }
    env['OMP_NUM_THREADS'] = '1'
    # As on a GPU host: the CPU run must not depend on this answer.
    env['FOCAL_RETINA_TEST_CUDA_VISIBLE'] = '1'
    if nproc == 1:
        cmd = [sys.executable, WORKER, out, normalizer]
    else:
        cmd = [
            sys.executable, '-m', 'torch.distributed.run',
            f'--nproc_per_node={nproc}', f'--master_port={free_port()}',
            WORKER, out, normalizer
        ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return torch.load(out)


def max_rel_diff(a: dict, b: dict) -> float:
    """Largest ||a - b|| / ||b|| over the parameter tensors; the norm is
    floored at 1e-6 so that biases still at ~0 (norm ~1e-8) do not turn
    float32 rounding into a large ratio."""
    return max(
        ((a[k] - b[k]).norm() / b[k].norm().clamp(min=1e-6)).item() for k in a)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    return {
        (norm, n): run(str(tmp / f'{norm}_{n}.pth'), norm, n)
        for norm in ('global', 'per_gpu')
        for n in (1, 2)
    }


@pytest.mark.slow
@pytest.mark.parametrize('step', [1, 3])
def test_global_normaliser_is_split_invariant(runs, step):
    single, dist2 = runs[('global', 1)][step], runs[('global', 2)][step]
    assert single.keys() == dist2.keys()
    assert max_rel_diff(dist2, single) < 1e-5


@pytest.mark.slow
def test_steps_move_the_parameters(runs):
    steps = runs[('global', 1)]
    assert max_rel_diff(steps[3], steps[1]) > 1e-4


@pytest.mark.slow
def test_per_gpu_normaliser_is_not(runs):
    single, dist2 = runs[('per_gpu', 1)][3], runs[('per_gpu', 2)][3]
    assert max_rel_diff(dist2, single) > 1e-4
