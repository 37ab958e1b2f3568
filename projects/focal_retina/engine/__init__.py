from .checkpoint import (RestrictedUnpickler, UntrustedCheckpointError,
                         allow_checkpoint_globals, safe_load)
from .optim_wrapper import CPUBF16OptimWrapper

__all__ = [
    'CPUBF16OptimWrapper', 'RestrictedUnpickler', 'UntrustedCheckpointError',
    'allow_checkpoint_globals', 'safe_load'
]
