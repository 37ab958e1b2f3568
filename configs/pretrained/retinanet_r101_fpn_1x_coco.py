# mmdet's released RetinaNet R-101-FPN 1x, COCO (box AP 38.5, val2017), as
# it was trained (mmdet's stock model, 80 COCO classes), with the URL of its
# weights.
_base_ = 'mmdet::retinanet/retinanet_r101_fpn_1x_coco.py'

custom_imports = dict(
    imports=['projects.focal_retina'], allow_failed_imports=False)
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
             'retinanet_r101_fpn_1x_coco/'
             'retinanet_r101_fpn_1x_coco_20200130-7a93545f.pth')
