# Table 1d: OHEM, batch size 512, nms 0.5; paper AP 27.6.
_base_ = './_base_/retina_r101_fpn_600_1x_ohem.py'

model = dict(train_cfg=dict(sampler=dict(batch_size=512, nms_iou=0.5)))
