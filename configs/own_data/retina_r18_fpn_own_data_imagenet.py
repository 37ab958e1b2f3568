# The photo variant of the own-data recipe with an ImageNet-pretrained
# ResNet-18 backbone (torchvision's weights; offline: docs/own_data.md).
# As in mmdet's pretrained configs, the stem and first stage stay frozen and
# BatchNorm keeps ImageNet's statistics (batches of 4 are too small).
_base_ = './retina_r18_fpn_own_data_photo.py'

model = dict(
    backbone=dict(
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(
            _delete_=True,
            type='Pretrained',
            checkpoint='torchvision://resnet18')))
