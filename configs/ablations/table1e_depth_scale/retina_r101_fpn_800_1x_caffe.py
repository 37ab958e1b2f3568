# Table 1e: R-101, 800 px, on MSRA's caffe-style ResNet; paper 37.8 AP.
_base_ = [
    './retina_r101_fpn_800_1x.py', '../../_base_/models/backbone_caffe.py'
]

model = _base_.caffe_r101_model
