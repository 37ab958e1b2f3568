# Table 1c: 1 scale(s) 2^(k/1), k < 1, x ratio {1:1} (A = 1);
# paper AP 30.3.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(
    bbox_head=dict(
        anchor_generator=dict(scales_per_octave=1, ratios=[1.0])))
