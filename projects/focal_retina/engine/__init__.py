from . import config_cache  # noqa: F401  (faster mmdet:: bases)
from .checkpoint import (UntrustedCheckpointError, allow_checkpoint_globals,
                         safe_load)
from .distributed import CPUAwareDistributedDataParallel, setup_cpu_distributed
from .optim_wrapper import CPUBF16OptimWrapper
from .schedulers import BudgetLinearLR, BudgetMultiStepLR

__all__ = [
    'BudgetLinearLR', 'BudgetMultiStepLR', 'CPUAwareDistributedDataParallel',
    'CPUBF16OptimWrapper', 'UntrustedCheckpointError',
    'allow_checkpoint_globals', 'safe_load', 'setup_cpu_distributed'
]
