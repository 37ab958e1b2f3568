# Table 1c: 2 scale(s) 2^(k/2), k < 2, x ratios {1:2, 1:1, 2:1} (A = 6);
# paper AP 34.2.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(
    bbox_head=dict(
        anchor_generator=dict(scales_per_octave=2, ratios=[0.5, 1.0, 2.0])))
