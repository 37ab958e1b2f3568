# Sec. 5.1 "Network Initialization": CE without the prior (last bias 0, so
# p = 0.5 at start); the paper reports that training diverges at once. The
# same model with the prior pi = .01 (30.2 AP) is Table 1a's alpha = .5.
_base_ = '../table1a_alpha_ce/retina_r50_fpn_600_1x_ce-a05.py'

model = dict(bbox_head=dict(prior_prob=None))
