# The paper's schedule (Sec. 4.1): SGD on 16 images per iteration, 90k
# iterations, lr 0.01 divided by 10 at 60k and 80k, momentum 0.9, weight
# decay 1e-4; Detectron's linear warm-up over 500 iterations from lr / 3.
max_iters = 90000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

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
        milestones=[60000, 80000],
        gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))

# 8 GPUs x 2 images. With --auto-scale-lr the lr follows the real batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
