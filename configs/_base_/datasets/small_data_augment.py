# Augmentation presets for training on few photos (own data), from mmdet's
# own transforms plus RandomRot90 (projects/focal_retina/datasets). Each
# preset is a train pipeline at 512 px (the own-data recipe's scale); use
# one in a config that inherits this file:
#   _base_ = ['../own_data/retina_r18_fpn_own_data.py',
#             '../_base_/datasets/small_data_augment.py']
#   train_dataloader = dict(dataset=dict(pipeline=_base_.photo_pipeline))
# For another scale, restate the pipeline with it.
preset_scale = (512, 512)

# Scale jitter (0.75-1.25x), a random crop back to the scale (boxes clipped
# to it; a crop without any box is dropped and another photo drawn), then
# flips / turns, then colour.
_jitter_crop = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomResize',
        scale=preset_scale,
        ratio_range=(0.75, 1.25),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=preset_scale, allow_negative_crop=False)
]
_colour = [
    # brightness +-32, contrast and saturation 0.5-1.5x, hue +-18 (mmdet's
    # defaults), each with probability 1/2.
    dict(type='PhotoMetricDistortion'),
    dict(type='PackDetInputs')
]

# Ground-level photos (a camera held upright): left-right flips only.
photo_pipeline = _jitter_crop + [
    dict(type='RandomFlip', prob=0.5, direction='horizontal')
] + _colour

# Overhead (aerial, satellite) and microscope photos, which have no "up":
# quarter turns and flips, each of the 8 symmetries of the square with
# probability 1/8 (RandomRot90 k = 0-3, then a left-right flip).
overhead_pipeline = _jitter_crop + [
    dict(type='RandomRot90', prob=0.75, turns=(1, 2, 3)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal')
] + _colour
