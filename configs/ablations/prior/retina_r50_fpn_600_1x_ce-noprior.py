# Sec. 5.1: CE without the prior initialisation (bias 0, p = 0.5 at start);
# the paper reports that this diverges.
_base_ = './retina_r50_fpn_600_1x_ce-prior.py'

model = dict(bbox_head=dict(prior_prob=None))
