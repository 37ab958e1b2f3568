"""Distributed training on CPU (gloo) as well as on GPUs (NCCL).

mmengine 0.10.7 assumes CUDA twice: ``init_dist`` calls
``torch.cuda.set_device`` before creating the process group, and the Runner
hands DDP ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module.
The Runner only calls ``init_dist`` when no process group exists yet and
builds DDP from ``model_wrapper_cfg``, so on a machine without CUDA
:func:`setup_cpu_distributed` creates the gloo group first and selects
:class:`CPUAwareDistributedDataParallel`, which drops ``device_ids`` for CPU
modules. On GPUs nothing changes.
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

_ENV_KEYS = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


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


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Prepares ``cfg`` and the process group for CPU distributed runs.

    Args:
        cfg: The config the Runner will be built from (modified in place).
        launcher: The ``--launcher`` argument of the tools.

    Returns:
        True if a gloo process group was created here.

    Raises:
        RuntimeError: A variable torchrun sets is missing from the
            environment (the tool was not started by a launcher).
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(f'--launcher {launcher} on a machine without '
                           "CUDA: only 'pytorch' (torchrun) is supported")
    missing = [k for k in _ENV_KEYS if k not in os.environ]
    if missing:
        raise RuntimeError(
            f'--launcher pytorch needs {", ".join(missing)} in the '
            'environment; start the tool with tools/dist_train.sh or '
            'torchrun')
    env_cfg = cfg.get('env_cfg') or {}
    cfg.env_cfg = dict(
        env_cfg, dist_cfg=dict(env_cfg.get('dist_cfg') or {}, backend='gloo'))
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type', 'MMDistributedDataParallel') == \
            'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = dict(
            wrapper, type='CPUAwareDistributedDataParallel')
    if not dist.is_initialized():
        dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            timeout=timedelta(minutes=30))
    return True
