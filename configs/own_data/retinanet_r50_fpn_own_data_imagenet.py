# mmdet's stock RetinaNet R-50 on your own photos from an ImageNet backbone
# (torchvision's ResNet-50) instead of the COCO detector: the R-50 COCO
# recipe without load_from, the backbone as mmdet's own config inits it
# (the head too: mmdet's init_cfg and prior, configs/pretrained/).
_base_ = './retinanet_r50_fpn_own_data_coco.py'

model = dict(
    backbone=dict(
        init_cfg=dict(
            _delete_=True,
            type='Pretrained',
            checkpoint='torchvision://resnet50')))
load_from = None
