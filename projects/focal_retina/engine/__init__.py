from .checkpoint import (UntrustedCheckpointError, allow_checkpoint_globals,
                         safe_load)
from .distributed import CPUAwareDistributedDataParallel, setup_cpu_distributed
from .optim_wrapper import CPUBF16OptimWrapper

__all__ = [
    'CPUAwareDistributedDataParallel', 'CPUBF16OptimWrapper',
    'UntrustedCheckpointError',
    'allow_checkpoint_globals', 'safe_load', 'setup_cpu_distributed'
]
