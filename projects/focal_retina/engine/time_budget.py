"""A wall-clock budget for a training run.

Comparing training recipes at the same wall-clock budget (e.g. from scratch
against fine-tuned, or augmentation presets whose iterations cost more) needs
the run to end when the time is up, then be evaluated and saved as at a
normal end. mmengine's ``EarlyStoppingHook`` stops on a metric, not on time,
and its stop skips the final validation; this hook shortens the loop instead.
"""
import time
from typing import Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

DATA_BATCH = Optional[dict]
_now = time.monotonic  # the clock (a test replaces it)


@HOOKS.register_module()
class TrainTimeBudgetHook(Hook):
    """Ends training at the first iteration after ``seconds`` of training.

    The loop's ``max_iters`` becomes the current iteration, so the train
    loop's last-iteration validation and the checkpoint hook's last save
    run as at a normal end. The lr schedule stays the one planned for the
    configured ``max_iters`` (a budget hook does not rescale it).

    Args:
        seconds: Training time allowed, from the first iteration (set-up,
            data loading before it and validation are counted: validation
            runs inside the loop).
    """

    priority = 'VERY_HIGH'  # before the checkpoint hook's after_train_iter

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f'TrainTimeBudgetHook: seconds={seconds!r}, '
                             'expected a number > 0')
        self.seconds = float(seconds)
        self._start: Optional[float] = None

    def before_train(self, runner) -> None:
        self._start = _now()

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        elapsed = _now() - self._start
        if elapsed < self.seconds or runner.iter + 1 >= runner.max_iters:
            return
        runner.logger.info(
            f'time budget of {self.seconds:g} s reached after '
            f'{runner.iter + 1} of {runner.max_iters} iterations: the run '
            'ends here (validation and the last checkpoint follow)')
        runner.train_loop._max_iters = runner.iter + 1
