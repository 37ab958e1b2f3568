# BCCD with the overhead preset (retina_r18_fpn_bccd_overhead.py), started
# from a checkpoint of other classes as retina_r18_fpn_bccd_ft.py is: the
# fourth row of docs/own_data.md, "Measured: BCCD".
_base_ = './retina_r18_fpn_bccd_overhead.py'

load_from = 'work_dirs/main_job/iter_500.pth'
