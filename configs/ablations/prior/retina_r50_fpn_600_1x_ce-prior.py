# Sec. 3.3 / 5.1: CE (gamma = 0, alpha = 0.75) with the prior pi = 0.01;
# the paper reports 30.2 AP.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=0.75)))
