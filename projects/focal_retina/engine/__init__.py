from . import config_cache  # noqa: F401  (faster mmdet:: bases)
from .checkpoint import (UntrustedCheckpointError, allow_checkpoint_globals,
                         safe_load)
from .distributed import CPUAwareDistributedDataParallel, setup_cpu_distributed
from .fuse import FuseConvBNHook, fuse_for_inference
from .hooks import (CheckpointCompatibilityHook, CheckpointMismatchError,
                    NonFiniteGuardHook, NonFiniteLossError, SafeCheckpointHook)
from .memory_format import ChannelsLastHook
from .optim_wrapper import CPUBF16OptimWrapper
from .plots_hook import PlotsHook
from .runner import FocalRetinaRunner
from .schedulers import BudgetLinearLR, BudgetMultiStepLR
from .time_budget import TrainTimeBudgetHook

__all__ = [
    'BudgetLinearLR', 'BudgetMultiStepLR', 'ChannelsLastHook',
    'CheckpointCompatibilityHook',
    'CheckpointMismatchError', 'CPUAwareDistributedDataParallel',
    'CPUBF16OptimWrapper', 'FocalRetinaRunner', 'FuseConvBNHook',
    'NonFiniteGuardHook', 'NonFiniteLossError', 'PlotsHook',
    'SafeCheckpointHook', 'TrainTimeBudgetHook', 'UntrustedCheckpointError',
    'allow_checkpoint_globals', 'fuse_for_inference', 'safe_load',
    'setup_cpu_distributed'
]
