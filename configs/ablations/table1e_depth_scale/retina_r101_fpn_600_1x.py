# Table 1e: R-101 at 600 px, train and test; paper 36.0 AP, 122 ms
# (test-dev, M40).
_base_ = './retina_r50_fpn_600_1x.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(checkpoint='torchvision://resnet101')))
