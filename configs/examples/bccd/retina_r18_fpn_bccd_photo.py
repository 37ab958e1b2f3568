# BCCD (retina_r18_fpn_bccd.py) with the augmentation preset for
# ground-level photos: scale jitter, random crop, left-right flip, colour
# (configs/_base_/datasets/small_data_augment.py), as
# configs/own_data/retina_r18_fpn_own_data_photo.py trains (a row of
# benchmarks/bccd.py on request: --rows photo).
_base_ = [
    './retina_r18_fpn_bccd.py', '../../_base_/datasets/small_data_augment.py'
]

train_dataloader = dict(dataset=dict(pipeline=_base_.photo_pipeline))
