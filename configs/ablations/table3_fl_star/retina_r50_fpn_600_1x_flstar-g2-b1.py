# Table 3: FL* (appendix A) gamma = 2.0, beta = 1.0; paper AP 33.8.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(star=True, gamma=2.0, star_beta=1.0, alpha=0.25)))
