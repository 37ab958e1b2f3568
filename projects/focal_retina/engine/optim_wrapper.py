"""Mixed precision on CPU.

mmengine's ``AmpOptimWrapper`` asserts a CUDA/NPU/MLU device, so mmdet's
``--amp`` fails on CPU. Whether ``torch.autocast('cpu', bfloat16)`` speeds
up a training step depends on the CPU (oneDNN's bf16 convolutions are fast
with AMX; with AVX-512 BF16 alone they can be slower than float32): ``--amp
auto`` measures it (:mod:`.amp_probe`). bfloat16 keeps float32's exponent
range, so no loss scaling is needed.
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUBF16OptimWrapper(OptimWrapper):
    """Optimizer wrapper running the forward under CPU bfloat16 autocast.

    CPU autocast leaves operations on other devices alone, so a model on a
    GPU would silently train in float32: the parameters must be on the CPU
    (checked here, when the Runner builds the wrapper for a model it has
    already moved to its device).

    Args:
        *args: Passed to :class:`mmengine.optim.OptimWrapper`.
        **kwargs: Passed to :class:`mmengine.optim.OptimWrapper`.

    Raises:
        ValueError: A parameter of the optimizer is not on the CPU.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for group in self.optimizer.param_groups:
            for param in group['params']:
                if param.device.type != 'cpu':
                    raise ValueError(
                        'CPUBF16OptimWrapper autocasts on the CPU, but a '
                        f'parameter is on {param.device}; use '
                        "optim_wrapper.type='AmpOptimWrapper' there")

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(
                device_type='cpu', dtype=torch.bfloat16):
            yield
