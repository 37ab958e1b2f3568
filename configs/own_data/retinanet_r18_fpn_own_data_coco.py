# Fine-tuning mmdet's COCO RetinaNet R-18 (configs/pretrained/; its stock
# model: 256-channel FPN, 4-conv towers, computed by our FocalRetinaHead and
# fused FocalFamilyLoss in mmdet's setting) on your own photos: every weight
# loads except the classifier (retina_cls, 80 COCO classes), which keeps
# its prior initialisation; the log lists the skipped keys. The data, the
# photo preset, validation and budget-relative schedule are those of the
# own-data recipe; inherit it as retina_r18_fpn_own_data.py says.
# Offline: docs/own_data.md.
_base_ = [
    '../pretrained/retinanet_r18_fpn_1x_coco.py',
    '../_base_/datasets/small_data_augment.py'
]

classes = ('object', )
data_root = 'data/mine/'
img_scale = (512, 512)

# load_from (the COCO weights) replaces every weight, so the ImageNet
# backbone is not fetched first.
model = dict(
    backbone=dict(init_cfg=None), bbox_head=dict(num_classes=len(classes)))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    _delete_=True,
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='CheckedCocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/ann_train.json',
        data_prefix=dict(img='images/'),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=_base_.photo_pipeline))
val_dataloader = dict(
    _delete_=True,
    batch_size=2,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CheckedCocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/ann_val.json',
        data_prefix=dict(img='images/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='ZeroIfEmptyCocoMetric',
    ann_file=data_root + 'annotations/ann_val.json',
    classwise=True)
test_evaluator = val_evaluator

# 500 iterations of 4 images, validated every 100; warm-up and steps are
# fractions of the run (train_cfg.max_iters=N rescales them). mmdet's SGD
# at its lr for 16 images scaled to 4 (0.01 x 4 / 16).
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=500, val_interval=100)
param_scheduler = [
    dict(
        type='BudgetLinearLR',
        start_factor=0.1,
        warmup_fraction=0.1,
        by_epoch=False),
    dict(
        type='BudgetMultiStepLR',
        milestone_fractions=[0.76, 0.92],
        gamma=0.1,
        by_epoch=False)
]
optim_wrapper = dict(
    optimizer=dict(lr=0.0025), clip_grad=dict(max_norm=35, norm_type=2))
# The best checkpoint by COCO AP is best_coco_bbox_mAP_iter_N.pth, and
# best_coco_bbox_mAP.pth names it (SafeCheckpointHook): test and run that.
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(
        type='SafeCheckpointHook',
        by_epoch=False,
        interval=10**9,
        save_last=True,
        max_keep_ckpts=1,
        save_best='coco/bbox_mAP',
        rule='greater'))
log_processor = dict(by_epoch=False)
# At the end of training, WORK_DIR/plots/: per-class precision-recall
# curves and a confusion matrix (with background) of the last validation,
# from the predictions it scored (PlotsHook; docs/own_data.md).
custom_hooks = [
    dict(type='NonFiniteGuardHook'),
    dict(
        type='CheckpointCompatibilityHook',
        allow_mismatch=['bbox_head.retina_cls']),
    dict(type='PlotsHook'),
    # With --amp (CPU bf16 autocast) the model trains channels-last, which
    # is faster there; float32 keeps NCHW (docs/benchmarks.md).
    dict(type='ChannelsLastHook', when='bf16')
]
randomness = dict(seed=0)
