# Table 1e: R-50, 700 px, on MSRA's caffe-style ResNet; paper 35.1 AP.
_base_ = [
    './retina_r50_fpn_700_1x.py', '../../_base_/models/backbone_caffe.py'
]

model = _base_.caffe_r50_model
