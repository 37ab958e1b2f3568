# Table 1e: R-101, 400 px, on MSRA's caffe-style ResNet; paper 31.9 AP.
_base_ = [
    './retina_r101_fpn_400_1x.py', '../../_base_/models/backbone_caffe.py'
]

model = _base_.caffe_r101_model
