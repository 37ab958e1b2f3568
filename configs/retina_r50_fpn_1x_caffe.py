# Table 1e: R-50, 800 px, on MSRA's caffe-style ResNet; paper 35.7 AP.
_base_ = ['./retina_r50_fpn_1x.py', './_base_/models/backbone_caffe.py']

model = _base_.caffe_r50_model
