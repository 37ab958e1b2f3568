# Table 1e, R-50 at 800 px: RetinaNet R-50-FPN, 1x schedule (90k x 16 images).
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_90k.py', '_base_/default_runtime.py'
]
# mmdet's CocoDataset and CocoMetric, reporting instead of failing: bad
# boxes dropped or clipped with counts, missing/unreadable images excluded
# by name, AP 0 (with a warning) when nothing is detected.
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
val_evaluator = dict(type='ZeroIfEmptyCocoMetric')
test_evaluator = val_evaluator
