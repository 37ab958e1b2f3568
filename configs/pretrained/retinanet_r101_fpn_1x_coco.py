# mmdet's released RetinaNet R-101-FPN 1x, COCO (box AP 38.5, val2017), as
# it was trained (mmdet's stock model, 80 COCO classes), with the URL of its
# weights. mmdet's R-101 config is its R-50 config with a deeper backbone;
# so is this one (the head: retinanet_r50_fpn_1x_coco.py).
_base_ = './retinanet_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
             'retinanet_r101_fpn_1x_coco/'
             'retinanet_r101_fpn_1x_coco_20200130-7a93545f.pth')
