# BCCD (retina_r18_fpn_bccd.py) with the augmentation preset for overhead
# and microscope photos: quarter turns and flips, scale jitter, random crop,
# colour (configs/_base_/datasets/small_data_augment.py), as
# configs/own_data/retina_r18_fpn_own_data_overhead.py trains.
_base_ = [
    './retina_r18_fpn_bccd.py', '../../_base_/datasets/small_data_augment.py'
]

train_dataloader = dict(dataset=dict(pipeline=_base_.overhead_pipeline))
