# Table 2: RetinaNet-101-800 with scale jitter (640-800) and the 1.5x schedule.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_135k.py', '_base_/default_runtime.py'
]
# mmdet's CocoDataset and CocoMetric, reporting instead of failing: bad
# boxes dropped or clipped with counts, missing/unreadable images excluded
# by name, AP 0 (with a warning) when nothing is detected (the training
# set's CheckedCocoDataset is set with its pipeline below).
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
val_evaluator = dict(type='ZeroIfEmptyCocoMetric')
test_evaluator = val_evaluator

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))

# Detectron's scale jitter: shorter side drawn from {640, 672, ..., 800}.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, s) for s in range(640, 801, 32)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    dataset=dict(type='CheckedCocoDataset', pipeline=train_pipeline))
