# Table 1e: R-101 at 400 px, train and test; paper 31.9 AP, 81 ms
# (test-dev, M40).
_base_ = './retina_r50_fpn_400_1x.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(checkpoint='torchvision://resnet101')))
