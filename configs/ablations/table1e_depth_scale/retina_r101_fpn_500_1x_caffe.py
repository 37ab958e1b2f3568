# Table 1e: R-101, 500 px, on MSRA's caffe-style ResNet; paper 34.4 AP.
_base_ = [
    './retina_r101_fpn_500_1x.py', '../../_base_/models/backbone_caffe.py'
]

model = _base_.caffe_r101_model
