"""A wall-clock budget for a training run.

Comparing training recipes at the same wall-clock budget (e.g. from scratch
against fine-tuned, or augmentation presets whose iterations cost more) needs
the run to end when the time is up, then be evaluated and saved as at a
normal end. mmengine's ``EarlyStoppingHook`` stops on a metric, not on time,
and its stop skips the final validation; this hook shortens the loop instead.

Both of mmengine's train loops are shortened, each so that its own end runs
(the loops read different attributes: ``IterBasedTrainLoop`` stops at
``max_iters``, ``EpochBasedTrainLoop`` only at ``max_epochs`` and at the end
of its dataloader). Under several processes the decision is rank 0's, sent
to every rank, so that all of them leave the loop at the same iteration.
"""
import time
from typing import Any, Optional

import torch
from mmengine.dist import broadcast, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

DATA_BATCH = Optional[dict]
_now = time.monotonic  # the clock (a test replaces it)


@HOOKS.register_module()
class TrainTimeBudgetHook(Hook):
    """Ends training at the first iteration after ``seconds`` of training.

    That iteration becomes the last one, so the loop's final validation and
    the checkpoint hook's last save run once, as at a normal end:

    * ``IterBasedTrainLoop``: ``max_iters`` becomes the current iteration
      (the loop validates when ``iter == max_iters``; ``CheckpointHook``
      saves at ``is_last_train_iter``).
    * ``EpochBasedTrainLoop``: the current epoch ends after this iteration
      and becomes the last one (``max_epochs``); ``after_train_epoch``
      saves and the loop validates, as after its last epoch. ``max_iters``
      is set as well, for a checkpoint hook that saves by iteration.

    Rank 0's clock decides and the decision is broadcast at every
    iteration: each rank deciding alone can leave one rank in validation
    while another waits in DDP's gradient all-reduce.

    The lr schedule stays the one planned for the configured run (a budget
    hook does not rescale it).

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
        self._stop = False  # the current epoch ends (epoch-based loop)
        self._patched: Optional[tuple] = None  # (dataloader, its class)

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            self._end_epoch_on_stop(loop.dataloader)
        elif not isinstance(loop, IterBasedTrainLoop):
            # Any other loop may read neither attribute: the budget would
            # be ignored without a word.
            raise TypeError(
                'TrainTimeBudgetHook (--time-budget) ends an '
                'EpochBasedTrainLoop or an IterBasedTrainLoop; train_cfg '
                f'builds {type(loop).__name__}')
        self._stop = False
        self._start = _now()

    def after_train(self, runner) -> None:
        if self._patched is not None:
            loader, cls = self._patched
            loader.__class__ = cls
            self._patched = None

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        # The same on every rank: they all skip the broadcast together.
        if runner.iter + 1 >= runner.max_iters:
            return
        spent = torch.zeros(1, dtype=torch.uint8)
        if is_main_process():
            spent[0] = _now() - self._start >= self.seconds
        broadcast(spent, src=0)  # nothing to do in a single process
        if not spent.item():
            return
        loop = runner.train_loop
        where = f'{runner.iter + 1} of {runner.max_iters} iterations'
        if isinstance(loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1} of {runner.max_epochs})'
            loop._max_epochs = runner.epoch + 1
            self._stop = True
        runner.logger.info(
            f'time budget of {self.seconds:g} s reached after {where}: the '
            'run ends here (validation and the last checkpoint follow)')
        loop._max_iters = runner.iter + 1

    def _end_epoch_on_stop(self, loader: Any) -> None:
        """Makes ``loader``'s iteration end once ``self._stop`` is set.

        ``EpochBasedTrainLoop.run_epoch`` runs ``for ... in
        enumerate(self.dataloader)`` with no way out for a hook, and the
        loop (or a subclass) calls ``after_train_epoch`` only once that
        iteration is over. The loader's class becomes a subclass whose
        ``__iter__`` stops before fetching the next batch, so the loader
        stays the same object to every other hook (isinstance, attributes
        set on it, persistent workers); ``after_train`` restores the class.
        """
        hook = self
        cls = type(loader)

        class _EndsOnTimeBudget(cls):  # type: ignore[misc, valid-type]

            def __iter__(self):
                for batch in super().__iter__():
                    yield batch
                    if hook._stop:  # checked before the next batch loads
                        return

        _EndsOnTimeBudget.__name__ = cls.__name__
        _EndsOnTimeBudget.__qualname__ = cls.__qualname__
        loader.__class__ = _EndsOnTimeBudget
        self._patched = (loader, cls)
