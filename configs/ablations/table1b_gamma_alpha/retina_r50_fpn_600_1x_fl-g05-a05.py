# Table 1b: FL gamma = 0.5, alpha = 0.5; paper AP 32.9.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.5, alpha=0.5)))
