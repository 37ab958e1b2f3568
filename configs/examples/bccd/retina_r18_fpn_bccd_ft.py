# BCCD (retina_r18_fpn_bccd.py) fine-tuned from the shapes checkpoint: the
# demo RetinaNet (configs/demo/retina_r18_fpn_shapes.py, the same
# architecture, 4 classes) after 60 iterations on the main job's shapes,
# made by
#   python tools/make_shapes.py --out data/shapes
#   python tools/train.py configs/demo/retina_r18_fpn_shapes.py \
#       --work-dir work_dirs/bccd/shapes --cfg-options train_cfg.max_iters=60
# Everything loads but the classification conv (4 classes there, 3 here),
# which keeps its prior initialisation (the recipe's
# CheckpointCompatibilityHook allows exactly that key to differ).
_base_ = './retina_r18_fpn_bccd.py'

load_from = 'work_dirs/bccd/shapes/iter_60.pth'
