# Table 1b: gamma = 0, alpha = 0.75 (alpha-balanced CE, as Table 1a's best);
# paper AP 31.1.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=0.75)))
