# BCCD (retina_r18_fpn_bccd.py) fine-tuned from a checkpoint of other
# classes: the main job's demo RetinaNet (configs/demo/retina_r18_fpn_shapes.py,
# the same architecture, 4 classes, 500 iterations on the shapes; README's
# main command writes it). benchmarks/bccd.py names another with
# --checkpoint. Everything loads but the classification conv (4 classes
# there, 3 here), which keeps its prior initialisation (the recipe's
# CheckpointCompatibilityHook allows exactly that key to differ).
_base_ = './retina_r18_fpn_bccd.py'

load_from = 'work_dirs/main_job/iter_500.pth'
