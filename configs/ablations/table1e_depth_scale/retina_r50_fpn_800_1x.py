# Table 1e: R-50 at 800 px (max side 1333), the R-50 1x model;
# paper 35.7 AP, 153 ms (test-dev, M40).
_base_ = '../../retina_r50_fpn_1x.py'
