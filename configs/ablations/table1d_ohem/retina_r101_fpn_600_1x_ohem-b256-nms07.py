# Table 1d: OHEM, batch size 256, nms 0.7; paper AP 31.8.
_base_ = './_base_/retina_r101_fpn_600_1x_ohem.py'

model = dict(train_cfg=dict(sampler=dict(batch_size=256, nms_iou=0.7)))
