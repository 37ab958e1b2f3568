# Table 2: the 1.5x schedule, 135k iterations, lr steps at 90k and 120k,
# the same 500-iteration warm-up.
_base_ = './schedule_90k.py'

max_iters = 135000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(
        type='BudgetLinearLR',
        start_factor=1.0 / 3,
        warmup_fraction=500 / 135000,
        by_epoch=False),
    dict(
        type='BudgetMultiStepLR',
        milestone_fractions=[90000 / 135000, 120000 / 135000],
        gamma=0.1,
        by_epoch=False)
]
