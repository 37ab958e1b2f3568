# Table 1c: 2 scale(s) 2^(k/2), k < 2, x ratio {1:1} (A = 2);
# paper AP 31.9.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(
    bbox_head=dict(
        anchor_generator=dict(scales_per_octave=2, ratios=[1.0])))
