# Table 1d: FL (gamma = 2, alpha = 0.25), R-101-FPN, 600 px; paper AP 36.0.
_base_ = './_base_/retina_r101_fpn_600_1x.py'
