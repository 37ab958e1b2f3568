# Table 1e: R-50, 600 px, on MSRA's caffe-style ResNet; paper 34.3 AP.
_base_ = [
    '../retina_r50_fpn_600_1x.py', '../../_base_/models/backbone_caffe.py'
]

model = _base_.caffe_r50_model
