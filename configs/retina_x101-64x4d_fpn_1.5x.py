# Table 2: RetinaNet-101-800 on ResNeXt-101-64x4d (jitter, 1.5x); 40.8 AP.
_base_ = './retina_r101_fpn_1.5x.py'

# mmdet's ResNeXt (64 groups of width 4; stride in the 3x3 conv, as
# Detectron's ResNeXts) with mmdet's converted ImageNet weights, which take
# mmdet's default RGB-normalised input; the rest as the R-101 model.
model = dict(
    backbone=dict(
        type='ResNeXt',
        groups=64,
        base_width=4,
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')))
