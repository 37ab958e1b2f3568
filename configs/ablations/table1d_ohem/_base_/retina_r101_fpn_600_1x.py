# Table 1d base: the Sec. 5.1 ablation model (600 px, FL) on ResNet-101-FPN.
_base_ = '../../retina_r50_fpn_600_1x.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
