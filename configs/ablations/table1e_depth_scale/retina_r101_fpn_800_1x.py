# Table 1e: R-101 at 800 px, train and test; paper 37.8 AP, 198 ms
# (test-dev, M40).
_base_ = '../../retina_r50_fpn_1x.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(checkpoint='torchvision://resnet101')))
