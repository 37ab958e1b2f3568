# Sec. 5.1 "Network Initialization": CE without the prior (last bias 0, so
# p = 0.5 at start); the paper reports that training diverges at once.
_base_ = './retina_r50_fpn_600_1x_ce-prior.py'

model = dict(bbox_head=dict(prior_prob=None))
