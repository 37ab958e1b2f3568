"""Mixed precision on CPU.

mmengine's ``AmpOptimWrapper`` asserts a CUDA/NPU/MLU device, so mmdet's
``--amp`` fails on CPU. CPUs with AVX-512 bf16 run the convolutions of a
training step about twice as fast under ``torch.autocast('cpu', bfloat16)``;
bfloat16 keeps float32's exponent range, so no loss scaling is needed.
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUBF16OptimWrapper(OptimWrapper):
    """Optimizer wrapper running the forward under CPU bfloat16 autocast.

    Args:
        *args: Passed to :class:`mmengine.optim.OptimWrapper`.
        **kwargs: Passed to :class:`mmengine.optim.OptimWrapper`.
    """

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(
                device_type='cpu', dtype=torch.bfloat16):
            yield
