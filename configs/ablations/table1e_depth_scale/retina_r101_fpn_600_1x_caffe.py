# Table 1e: R-101, 600 px, on MSRA's caffe-style ResNet; paper 36.0 AP.
_base_ = [
    '../table1d_ohem/retina_r101_fpn_600_1x_fl.py',
    '../../_base_/models/backbone_caffe.py'
]

model = _base_.caffe_r101_model
