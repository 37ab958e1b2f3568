# The main job: a small RetinaNet (ResNet-18, 128-channel FPN, 2-conv towers)
# trained from scratch on the synthetic shapes in minutes on a CPU.
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/shapes.py',
    '../_base_/default_runtime.py'
]

model = dict(
    backbone=dict(
        depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    bbox_head=dict(
        num_classes=4,
        in_channels=128,
        feat_channels=128,
        stacked_convs=2,
        # Objects are 14-48 px: anchors of 2x the stride (16 px on P3).
        anchor_generator=dict(octave_base_scale=2)))

max_iters = 400
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
        milestones=[300, 370], gamma=0.1)
]
# From scratch, lr 0.02 needs gradient clipping (it diverged without).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=10, norm_type=2))

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
