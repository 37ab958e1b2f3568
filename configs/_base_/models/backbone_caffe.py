# The paper's backbone (Sec. 4.1: the ImageNet-1k ResNets released by He et
# al. [15]), as a switch any paper config can take. A config adds this file
# to its _base_ list and sets `model = _base_.caffe_r50_model` (or
# `caffe_r101_model`); the keys here do not collide with the paper bases'
# (mmengine refuses a key that two bases both define); names starting with
# `__` are private to this file (mmengine drops them).
#
# What it changes, against mmdet's default (torchvision's ResNets):
# - style='caffe': MSRA's ResNets stride in the first 1x1 conv of a
#   bottleneck, torchvision's in the 3x3 (the shapes are the same).
# - BN frozen, statistics and affine (requires_grad=False, norm_eval=True),
#   as Detectron's AffineChannel layers; mmdet freezes the statistics only.
# - Input BGR in 0-255 with the mean subtracted and no std division (MSRA's
#   models absorbed the std into conv1). The mean is mmdet's (and
#   detectron2's) for these weights, as mmdet's retinanet_r50-caffe configs
#   set it; Detectron used [102.9801, 115.9465, 122.7717], < 1 grey level
#   away per channel.
# - The weights: MSRA's ResNet-50 / -101 as mmdet converted them from
#   detectron2's R-50.pkl / R-101.pkl (open-mmlab://detectron2/*_caffe).
__caffe_preprocessor = dict(
    type='DetDataPreprocessor',
    mean=[103.530, 116.280, 123.675],
    std=[1.0, 1.0, 1.0],
    bgr_to_rgb=False,
    pad_size_divisor=32)
__caffe_backbone = dict(
    style='caffe', norm_cfg=dict(requires_grad=False), norm_eval=True)

caffe_r50_model = dict(
    data_preprocessor=__caffe_preprocessor,
    backbone=dict(
        **__caffe_backbone,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron2/resnet50_caffe')))
caffe_r101_model = dict(
    data_preprocessor=__caffe_preprocessor,
    backbone=dict(
        **__caffe_backbone,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron2/resnet101_caffe')))
