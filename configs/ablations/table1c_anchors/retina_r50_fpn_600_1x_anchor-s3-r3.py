# Table 1c: 3 scale(s) x 3 aspect ratio(s) (A = 9), the default
# anchors; paper AP 34.0.
_base_ = '../retina_r50_fpn_600_1x.py'
