# Table 1c: 1 scale(s) 2^(k/1), k < 1, x ratios {1:2, 1:1, 2:1} (A = 3);
# paper AP 32.4.
_base_ = '../retina_r50_fpn_600_1x.py'

model = dict(
    bbox_head=dict(
        anchor_generator=dict(scales_per_octave=1, ratios=[0.5, 1.0, 2.0])))
