"""Learning-rate schedules written as fractions of the run.

The paper's schedule (Sec. 4.1) is 90k iterations with the lr divided by 10
at 60k and 80k, i.e. at 2/3 and 8/9 of the run, after Detectron's 500
iteration linear warm-up. mmengine's ``MultiStepLR`` / ``LinearLR`` take
absolute iterations, resolved when the config is read, so
``--cfg-options train_cfg.max_iters=1000`` on a 90k config would train
1000 iterations at full lr and never reach a step; a 500-iteration config
run for 1000 iterations would spend its second half at lr / 100.

These two schedulers take fractions instead. They leave ``end`` unset in
the config, so mmengine's Runner passes ``train_cfg.max_iters`` as ``end``
when it builds them (``Runner._build_param_scheduler``) — after
``--cfg-options`` and ``--iters`` were applied — and the fractions are
turned into iterations there: a new budget is one number.
"""
from typing import List, Sequence

from mmengine.optim.scheduler import LinearLR, MultiStepLR
from mmengine.optim.scheduler.param_scheduler import INF
from mmengine.registry import PARAM_SCHEDULERS


def _run_length(name: str, begin: int, end: int) -> int:
    if end == INF:
        raise ValueError(
            f'{name}: end is not set; leave it out of the config so that the '
            'Runner sets it to train_cfg.max_iters, or give end explicitly')
    if end <= begin:
        raise ValueError(f'{name}: end ({end}) must be after begin ({begin})')
    return end - begin


def _check_fractions(name: str, key: str, values: Sequence[float]) -> None:
    if not values or any(not 0.0 < f < 1.0 for f in values):
        raise ValueError(f'{name}: {key} must be fractions of the run in '
                         f'(0, 1), got {list(values)!r}')


@PARAM_SCHEDULERS.register_module()
class BudgetMultiStepLR(MultiStepLR):
    """``MultiStepLR`` whose milestones are fractions of the run.

    Args:
        optimizer: The wrapped optimizer.
        milestone_fractions: Where the lr is multiplied by ``gamma``, as
            fractions of (end - begin), e.g. ``[2 / 3, 8 / 9]`` for the
            paper's 60k and 80k of 90k.
        gamma: Multiplicative factor at each milestone.
        begin: First iteration of the schedule.
        end: Last iteration (exclusive); the Runner sets it to max_iters.
        **kwargs: Passed to ``MultiStepLR`` (``by_epoch`` must be False).
    """

    def __init__(self,
                 optimizer,
                 milestone_fractions: Sequence[float],
                 gamma: float = 0.1,
                 begin: int = 0,
                 end: int = INF,
                 **kwargs) -> None:
        _check_fractions(type(self).__name__, 'milestone_fractions',
                         milestone_fractions)
        length = _run_length(type(self).__name__, begin, end)
        self.milestone_fractions: List[float] = list(milestone_fractions)
        milestones = [round(f * length) for f in milestone_fractions]
        super().__init__(
            optimizer,
            milestones=milestones,
            gamma=gamma,
            begin=begin,
            end=end,
            **kwargs)


@PARAM_SCHEDULERS.register_module()
class BudgetLinearLR(LinearLR):
    """Linear warm-up over a fraction of the run.

    Args:
        optimizer: The wrapped optimizer.
        warmup_fraction: Length of the warm-up as a fraction of the run
            (500 / 90000 for Detectron's 500 iterations of 90k); at least
            one iteration.
        start_factor: lr factor at the first iteration (paper: 1 / 3).
        begin: First iteration of the warm-up.
        end: End of the run; the Runner sets it to max_iters.
        **kwargs: Passed to ``LinearLR`` (``by_epoch`` must be False).
    """

    def __init__(self,
                 optimizer,
                 warmup_fraction: float,
                 start_factor: float = 1.0 / 3,
                 begin: int = 0,
                 end: int = INF,
                 **kwargs) -> None:
        _check_fractions(type(self).__name__, 'warmup_fraction',
                         [warmup_fraction])
        length = _run_length(type(self).__name__, begin, end)
        self.warmup_fraction = warmup_fraction
        warmup = max(1, round(warmup_fraction * length))
        super().__init__(
            optimizer,
            start_factor=start_factor,
            begin=begin,
            end=begin + warmup,
            **kwargs)
