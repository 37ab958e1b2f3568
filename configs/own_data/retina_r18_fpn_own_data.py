# Your own dataset on a CPU or one GPU (README "Your own dataset"): the main
# job's small RetinaNet (R-18, 128-channel FPN, GN towers, AdamW), trained
# from scratch, on COCO json written by tools/dataset_converters/*.
#
# Inherit it and set what is yours, e.g. my_configs/trees.py:
#   _base_ = '../configs/own_data/retina_r18_fpn_own_data.py'
#   classes = ('tree', )
#   data_root = 'data/trees/'
#   model = dict(bbox_head=dict(num_classes=len(classes)))
#   train_dataloader = dict(dataset=dict(
#       data_root=data_root, metainfo=dict(classes=classes)))
#   val_dataloader = dict(dataset=dict(
#       data_root=data_root, metainfo=dict(classes=classes)))
#   test_dataloader = val_dataloader
#   val_evaluator = dict(ann_file=data_root + 'annotations/ann_val.json')
#   test_evaluator = val_evaluator
# (mmengine resolves a base's variables before the child's, so the class
# names and folder are repeated where they are used.) The budget is one
# number: --cfg-options train_cfg.max_iters=N rescales warm-up and steps.
# With a network, retinanet_r18_fpn_own_data_coco.py (mmdet's COCO
# RetinaNet, fine-tuned) is the better start; this one needs no download.
_base_ = '../demo/retina_r18_fpn_shapes.py'

classes = ('object', )
data_root = 'data/mine/'
# Images at the size the objects were labelled at; a 512 px input keeps
# objects of ~10 px above the smallest (16 px) anchors of P3.
img_scale = (512, 512)

# The demo's pipelines at this scale (a config list replaces its base's,
# so they are restated).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]

model = dict(bbox_head=dict(num_classes=len(classes)))
# The converters write file_name relative to the image root (--img-root).
train_dataloader = dict(
    batch_size=4,
    dataset=dict(
        type='CheckedCocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/ann_train.json',
        data_prefix=dict(img='images/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    dataset=dict(
        type='CheckedCocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/ann_val.json',
        data_prefix=dict(img='images/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# AP of every class too (classwise), in the log and the results.
val_evaluator = dict(
    ann_file=data_root + 'annotations/ann_val.json', classwise=True)
test_evaluator = val_evaluator

# Validation every 100 iterations (mmengine validates after the last one
# too, whatever max_iters); the best checkpoint by COCO AP is kept as
# best_coco_bbox_mAP_iter_N.pth, and best_coco_bbox_mAP.pth names it
# (SafeCheckpointHook): test and run that one.
train_cfg = dict(val_interval=100)
default_hooks = dict(
    checkpoint=dict(save_best='coco/bbox_mAP', rule='greater'))

# Fine-tuning from a checkpoint of the same architecture trained on other
# classes: load_from='PATH.pth' loads everything but the classification
# conv, which keeps its prior initialisation (the skipped keys are logged).
load_from = None
# At the end of training, WORK_DIR/plots/: per-class precision-recall
# curves and a confusion matrix (with background) of the last validation,
# from the predictions it scored (PlotsHook; docs/own_data.md).
custom_hooks = [
    dict(type='NonFiniteGuardHook'),
    dict(
        type='CheckpointCompatibilityHook',
        allow_mismatch=['bbox_head.retina_cls']),
    dict(type='PlotsHook')
]
