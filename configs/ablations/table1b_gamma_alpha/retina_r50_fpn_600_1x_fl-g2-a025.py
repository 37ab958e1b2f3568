# Table 1b: FL gamma = 2.0, alpha = 0.25; paper AP 34.0.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=2.0, alpha=0.25)))
