"""Conv + BatchNorm folding for inference (``--fuse-conv-bn``).

At test time every BatchNorm of the ResNet backbone is a fixed per-channel
affine map (running mean and variance, weight, bias) right after a
convolution, so it can be folded into that convolution's weight and bias:
the same function, one pass over each feature map fewer. mmcv provides the
folding (:func:`mmcv.cnn.fuse_conv_bn`); mmdet 3.3's ``tools/test.py`` has
it only as a TODO, so this module adds the hook and the helper that our
``tools/test.py`` and ``tools/infer.py`` use behind ``--fuse-conv-bn``.

The folded model cannot be trained again (its BatchNorms are gone), so the
hook folds in ``before_test`` only, never during a training run's
validation. The paper's head and FPN have no normalisation; a GN head (the
demo config) keeps its GroupNorms, which have no running statistics.
"""
import torch
from mmcv.cnn import fuse_conv_bn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def count_batch_norms(model: torch.nn.Module) -> int:
    """The number of BatchNorm layers (SyncBatchNorm included)."""
    return sum(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for m in model.modules())


def fuse_for_inference(model: torch.nn.Module) -> int:
    """Folds every BatchNorm that follows a conv into it, in place.

    Args:
        model: a detector (or a model wrapper around one) loaded with the
            weights to run; it is put in eval mode, whose BatchNorm is the
            affine map that is folded.

    Returns:
        The number of BatchNorm layers folded (20 for a ResNet-18, 53 for
        a ResNet-50).
    """
    if is_model_wrapper(model):
        model = model.module
    model.eval()
    before = count_batch_norms(model)
    with torch.no_grad():  # the folded weights are new leaf parameters
        fuse_conv_bn(model)
    for param in model.parameters():
        param.requires_grad_(False)
    return before - count_batch_norms(model)


@HOOKS.register_module()
class FuseConvBNHook(Hook):
    """Folds BatchNorm into the preceding convs before a test run.

    ``before_test`` runs after the Runner has loaded the checkpoint
    (``load_or_resume`` comes first in ``Runner.test``), so the folded
    statistics are the checkpoint's.
    """

    priority = 'VERY_LOW'  # after every other before_test

    def before_test(self, runner) -> None:
        folded = fuse_for_inference(runner.model)
        runner.logger.info(f'--fuse-conv-bn: folded {folded} BatchNorm '
                           'layers into their convolutions')
