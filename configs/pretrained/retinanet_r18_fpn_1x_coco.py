# mmdet's released RetinaNet R-18-FPN 1x, COCO (box AP 31.7, val2017), as it
# was trained (mmdet's stock model, 80 COCO classes), with the URL of its
# weights.
_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'

custom_imports = dict(
    imports=['projects.focal_retina'], allow_failed_imports=False)
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
             'retinanet_r18_fpn_1x_coco/'
             'retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth')
