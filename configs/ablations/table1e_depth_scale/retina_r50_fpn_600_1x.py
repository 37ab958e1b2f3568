# Table 1e: R-50 at 600 px (max side 1000), the ablation default;
# paper 34.3 AP, 98 ms (test-dev, M40).
_base_ = '../retina_r50_fpn_600_1x.py'
