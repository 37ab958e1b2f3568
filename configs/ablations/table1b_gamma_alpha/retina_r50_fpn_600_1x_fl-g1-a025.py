# Table 1b: FL gamma = 1.0, alpha = 0.25; paper AP 33.7.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=1.0, alpha=0.25)))
