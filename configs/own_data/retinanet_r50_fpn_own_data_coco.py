# The COCO fine-tuning recipe with mmdet's RetinaNet R-50 (COCO box AP 36.5
# against R-18's 31.7; about 3x the compute): the R-50 stock model and the
# weights of configs/pretrained/retinanet_r50_fpn_1x_coco.py.
_base_ = './retinanet_r18_fpn_own_data_coco.py'

model = dict(
    backbone=dict(depth=50), neck=dict(in_channels=[256, 512, 1024, 2048]))
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
             'retinanet_r50_fpn_1x_coco/'
             'retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth')
