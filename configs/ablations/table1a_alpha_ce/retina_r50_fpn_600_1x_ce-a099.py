# Table 1a: alpha-balanced CE (gamma = 0), alpha = 0.99; paper AP 28.7.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=0.99)))
