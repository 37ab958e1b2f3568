# Table 1a: alpha-balanced CE (gamma = 0), alpha = 0.5; paper AP 30.2.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=0.5)))
