# Table 2: the 1.5x schedule, 135k iterations, lr steps at 90k and 120k.
_base_ = './schedule_90k.py'

max_iters = 135000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1.0 / 3,
        by_epoch=False,
        begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[90000, 120000],
        gamma=0.1)
]
