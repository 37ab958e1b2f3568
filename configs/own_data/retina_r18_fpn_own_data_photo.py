# The own-data recipe (R-18 from scratch) with the augmentation preset for
# ground-level photos (scale jitter, random crop, left-right flip, colour);
# validation and the best checkpoint (best_coco_bbox_mAP.pth) as in the
# recipe. Inherit it as retina_r18_fpn_own_data.py says.
_base_ = [
    './retina_r18_fpn_own_data.py', '../_base_/datasets/small_data_augment.py'
]

train_dataloader = dict(dataset=dict(pipeline=_base_.photo_pipeline))
# To stop when the validation AP has not improved for 3 validations, add
#   dict(type='EarlyStoppingHook', monitor='coco/bbox_mAP', rule='greater',
#        patience=3, min_delta=0.002)
# to custom_hooks (mmengine's; a child's list replaces this one).
