# Table 2: RetinaNet-101-800 on MSRA's caffe-style ResNet; paper 39.1 AP.
_base_ = ['./retina_r101_fpn_1.5x.py', './_base_/models/backbone_caffe.py']

model = _base_.caffe_r101_model
