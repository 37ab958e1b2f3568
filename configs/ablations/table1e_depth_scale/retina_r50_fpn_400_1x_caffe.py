# Table 1e: R-50, 400 px, on MSRA's caffe-style ResNet; paper 30.5 AP.
_base_ = [
    './retina_r50_fpn_400_1x.py', '../../_base_/models/backbone_caffe.py'
]

model = _base_.caffe_r50_model
