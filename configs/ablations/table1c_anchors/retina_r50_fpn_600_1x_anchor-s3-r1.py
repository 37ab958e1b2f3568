# Table 1c: 3 scale(s) 2^(k/3), k < 3, x ratio {1:1} (A = 3);
# paper AP 31.8.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(
    bbox_head=dict(
        anchor_generator=dict(scales_per_octave=3, ratios=[1.0])))
