"""Channels-last (NHWC) weights: bfloat16 training and inference on CPU.

oneDNN's convolutions on a CPU without AMX work on channels-last blocks:
with the model in PyTorch's default NCHW layout each convolution reorders
its input, weight and output. Converting the model to
``torch.channels_last`` once removes those reorders. Measured on a 2-core
AVX-512 CPU (``benchmarks/finetune_speed.py``, docs/benchmarks.md): faster
for a training step under bf16 autocast and for float32 inference, but
slower for a float32 training step. So :class:`ChannelsLastHook` converts

* before training, by default only a run that trains under
  :class:`~.optim_wrapper.CPUBF16OptimWrapper` (``--amp`` on the CPU, or
  ``--amp auto`` where it picks bf16);
* before a test run (``tools/test.py``), in any precision, after
  ``--fuse-conv-bn`` has folded the BatchNorms (lower priority).

A convolution's output is channels-last when its input or its weight is
(PyTorch's ``mkldnn_conv_use_channels_last``), so converting the
parameters is enough: the first convolution's output, and every later
activation, is NHWC; the data preprocessor's batch is left as it is. The
values are unchanged, only the strides differ; the convolutions sum in
another order, so outputs, losses and gradients differ from the NCHW
model's by float rounding (tests/test_engine/test_memory_format.py
compares them with mmdet's stock model). ``Module.to`` swaps each
parameter's ``.data``, so the optimizer built before the hook runs still
holds the same parameters.
"""
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .optim_wrapper import CPUBF16OptimWrapper

WHEN = ('bf16', 'always')


def to_channels_last(model: torch.nn.Module) -> int:
    """Puts every 4-d parameter and buffer of ``model`` in channels-last
    layout, in place.

    Args:
        model: A model, or a model wrapper around one.

    Returns:
        The number of 4-d parameters (convolution weights) converted.
    """
    if is_model_wrapper(model):
        model = model.module
    model.to(memory_format=torch.channels_last)
    return sum(p.dim() == 4 for p in model.parameters())


def trains_in_bf16(optim_wrapper: Any) -> bool:
    """Whether the step runs under CPU bfloat16 autocast."""
    return isinstance(optim_wrapper, CPUBF16OptimWrapper)


def channels_last_for_inference(cfg: Any, model: torch.nn.Module) -> bool:
    """What :meth:`ChannelsLastHook.before_test` does, for a tool that runs
    a config's model without a Runner (mmdet's ``DetInferencer``): converts
    ``model`` when the config's ``custom_hooks`` hold a ChannelsLastHook
    with ``test=True``.

    Args:
        cfg: The config (anything with ``.get('custom_hooks')``).
        model: The model built from it, weights loaded (after any
            BatchNorm folding).

    Returns:
        Whether the model was converted.
    """
    for hook in cfg.get('custom_hooks') or []:
        if hook.get('type') in ('ChannelsLastHook', ChannelsLastHook) \
                and hook.get('test', True):
            to_channels_last(model)
            return True
    return False


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Converts the model to channels-last before training and testing.

    ``before_train`` runs after the Runner has built the optimizer wrapper
    and loaded ``load_from``, so the hook sees the precision the run trains
    in (``--amp`` changes the wrapper's type after the config is read);
    ``before_test`` after the checkpoint is loaded and, at a lower
    priority, after :class:`~.fuse.FuseConvBNHook`.

    Args:
        when: Training: ``'bf16'`` (default): only when the optimizer
            wrapper is :class:`~.optim_wrapper.CPUBF16OptimWrapper`, where
            it is faster; ``'always'``: in any precision.
        test: Convert before a test run (default True).

    Raises:
        ValueError: ``when`` is not one of :data:`WHEN`.
    """

    priority = 'LOWEST'  # after the hooks that load, fold or replace weights

    def __init__(self, when: str = 'bf16', test: bool = True) -> None:
        if when not in WHEN:
            raise ValueError(f'ChannelsLastHook: when={when!r}; expected '
                             f'one of {WHEN}')
        self.when = when
        self.test = test

    def before_train(self, runner) -> None:
        bf16 = trains_in_bf16(runner.optim_wrapper)
        if self.when == 'bf16' and not bf16:
            runner.logger.info('ChannelsLastHook: float32 training, the '
                               'model keeps the NCHW layout')
            return
        self._convert(runner, 'training' + (' (bf16)' if bf16 else ''))

    def before_test(self, runner) -> None:
        if self.test:
            self._convert(runner, 'testing')

    @staticmethod
    def _convert(runner, what: str) -> None:
        if isinstance(runner.model, torch.nn.parallel.DistributedDataParallel):
            # DDP laid its gradient buckets out for the parameters' strides
            # when it was built; changing them now costs a copy per step.
            runner.logger.info('ChannelsLastHook: not applied under '
                               'DistributedDataParallel')
            return
        converted = to_channels_last(runner.model)
        runner.logger.info(f'ChannelsLastHook: {what} with {converted} '
                           'convolution weights in channels-last layout')
