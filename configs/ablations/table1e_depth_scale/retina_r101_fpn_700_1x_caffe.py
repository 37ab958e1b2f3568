# Table 1e: R-101, 700 px, on MSRA's caffe-style ResNet; paper 37.1 AP.
_base_ = [
    './retina_r101_fpn_700_1x.py', '../../_base_/models/backbone_caffe.py'
]

model = _base_.caffe_r101_model
