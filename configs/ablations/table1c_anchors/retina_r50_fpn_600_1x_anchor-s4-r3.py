# Table 1c: 4 scale(s) 2^(k/4), k < 4, x ratios {1:2, 1:1, 2:1} (A = 12);
# paper AP 33.8.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(
    bbox_head=dict(
        anchor_generator=dict(scales_per_octave=4, ratios=[0.5, 1.0, 2.0])))
