"""Distributed training on CPU (gloo) as well as on GPUs (NCCL).

mmengine 0.10.7 assumes CUDA twice: ``init_dist`` calls
``torch.cuda.set_device`` before creating the process group, and the Runner
hands DDP ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module.
The Runner only calls ``init_dist`` when no process group exists yet and
builds DDP from ``model_wrapper_cfg``, so when the model will live on the
CPU :func:`setup_cpu_distributed` creates the gloo group first and selects
:class:`CPUAwareDistributedDataParallel`, which drops ``device_ids`` for CPU
modules. On GPUs nothing changes.

Which device is meant is an argument, not a guess from
``torch.cuda.is_available()``: by default it is the device mmengine's Runner
itself moves the model to (``mmengine.device.get_device()``; hide the GPUs
with ``CUDA_VISIBLE_DEVICES=''`` to train on the CPU of a GPU host).
"""
import os
from datetime import timedelta
from typing import Optional

import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

_ENV_KEYS = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
_MM_DDP = 'MMDistributedDataParallel'


@MODEL_WRAPPERS.register_module()
class CPUAwareDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper that also accepts a module on the CPU.

    Args:
        module: The model.
        device_ids: Ignored when ``module`` lives on the CPU (DDP needs None
            there); passed on otherwise.
        **kwargs: Passed to :class:`MMDistributedDataParallel`.
    """

    def __init__(self, module: nn.Module, device_ids=None, **kwargs) -> None:
        param = next(module.parameters(), None)
        if param is None or param.device.type == 'cpu':
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def cpu_wrapper_cfg(cfg: Config) -> dict:
    """The ``model_wrapper_cfg`` that wraps a CPU model as mmengine would.

    mmengine's ``Runner.wrap_model`` builds, when the config has no
    ``model_wrapper_cfg``, ``MMDistributedDataParallel(broadcast_buffers=
    False, find_unused_parameters=cfg.find_unused_parameters)``; given a
    ``model_wrapper_cfg`` it uses exactly the user's keys (type defaulting
    to MMDistributedDataParallel). Both cases are kept, only the type of an
    MMDistributedDataParallel becomes :class:`CPUAwareDistributedDataParallel`.
    Other wrapper types are returned unchanged.
    """
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        return dict(
            type='CPUAwareDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper = dict(wrapper)
    if wrapper.get('type', _MM_DDP) in (_MM_DDP, MMDistributedDataParallel):
        wrapper['type'] = 'CPUAwareDistributedDataParallel'
    return wrapper


def setup_cpu_distributed(cfg: Config,
                          launcher: str,
                          device: Optional[str] = None) -> bool:
    """Prepares ``cfg`` and the process group for CPU distributed runs.

    Args:
        cfg: The config the Runner will be built from (modified in place).
        launcher: The ``--launcher`` argument of the tools.
        device: The device type the model will run on ('cpu', 'cuda', ...);
            None: ``mmengine.device.get_device()``, the one mmengine's Runner
            moves the model to. Nothing is done unless it is 'cpu'.

    Returns:
        True if the config was prepared for CPU (a gloo process group exists
        when this returns).

    Raises:
        RuntimeError: A variable torchrun sets is missing from the
            environment (the tool was not started by a launcher), or the
            launcher is not 'pytorch'.
    """
    if launcher == 'none':
        return False
    if device is None:
        device = get_device()
    if device != 'cpu':
        return False
    if launcher != 'pytorch':
        raise RuntimeError(f'--launcher {launcher} with the model on the '
                           "CPU: only 'pytorch' (torchrun) is supported")
    missing = [k for k in _ENV_KEYS if k not in os.environ]
    if missing:
        raise RuntimeError(
            f'--launcher pytorch needs {", ".join(missing)} in the '
            'environment; start the tool with tools/dist_train.sh or '
            'torchrun')
    env_cfg = cfg.get('env_cfg') or {}
    cfg.env_cfg = dict(
        env_cfg, dist_cfg=dict(env_cfg.get('dist_cfg') or {}, backend='gloo'))
    cfg.model_wrapper_cfg = cpu_wrapper_cfg(cfg)
    if not dist.is_initialized():
        dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            timeout=timedelta(minutes=30))
    return True
