# Table 1e: R-101 at 500 px, train and test; paper 34.4 AP, 90 ms
# (test-dev, M40).
_base_ = './retina_r50_fpn_500_1x.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(checkpoint='torchvision://resnet101')))
