# Table 1e, R-50 at 800 px: RetinaNet R-50-FPN, 1x schedule (90k x 16 images).
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_90k.py', '_base_/default_runtime.py'
]
