"""A hook that SIGKILLs the training process once, for the kill -9 tests
(imported through a test config's ``custom_imports``)."""
import os
import os.path as osp
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillOnceAtIter(Hook):
    """After iteration ``at`` (1-based) rank 0 kills itself with SIGKILL,
    as ``kill -9`` would, unless ``marker`` exists (the resumed run)."""

    priority = 'LOWEST'

    def __init__(self, at: int, marker: str) -> None:
        self.at, self.marker = at, marker

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 == self.at and runner.rank == 0 \
                and not osp.exists(self.marker):
            open(self.marker, 'w').close()
            os.kill(os.getpid(), signal.SIGKILL)
