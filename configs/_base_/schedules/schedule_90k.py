# The paper's schedule (Sec. 4.1): SGD on 16 images per iteration, 90k
# iterations, lr 0.01 divided by 10 at 60k and 80k, momentum 0.9, weight
# decay 1e-4; Detectron's linear warm-up over 500 iterations from lr / 3.
# Warm-up and steps are fractions of the run (2/3 and 8/9 of 90k), resolved
# against train_cfg.max_iters when training starts, so changing max_iters
# (or --iters) rescales the whole schedule.
max_iters = 90000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(
        type='BudgetLinearLR',
        start_factor=1.0 / 3,
        warmup_fraction=500 / 90000,
        by_epoch=False),
    dict(
        type='BudgetMultiStepLR',
        milestone_fractions=[60000 / 90000, 80000 / 90000],
        gamma=0.1,
        by_epoch=False)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))

# 8 GPUs x 2 images. With --auto-scale-lr the lr follows the real batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
