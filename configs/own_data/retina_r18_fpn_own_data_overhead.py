# The own-data recipe with the preset for overhead (aerial) and microscope
# photos: quarter turns and flips (the 8 symmetries of the square), scale
# jitter, random crop and colour; validation as in the photo variant.
# For long runs: on BCCD at a 20-minute CPU budget it lost to the plain
# pipeline from scratch and from a checkpoint (docs/own_data.md,
# "Measured: BCCD"), so no recipe uses it by default.
_base_ = './retina_r18_fpn_own_data_photo.py'

train_dataloader = dict(dataset=dict(pipeline=_base_.overhead_pipeline))
