# Table 1d: OHEM 1:3, batch size 512, nms 0.5; paper AP 24.0.
_base_ = './_base_/retina_r101_fpn_600_1x_ohem.py'

model = dict(
    train_cfg=dict(
        sampler=dict(batch_size=512, nms_iou=0.5, pos_fraction=0.25)))
