# The demo RetinaNet on the sparse shapes (tools/make_shapes.py --preset
# sparse: 384 px images with 1-4 objects of 14-32 px): the same model,
# schedule and optimizer as retina_r18_fpn_shapes.py, fed at 384 px so that
# the model sees ~28k anchors per image against ~20 positive ones, the
# paper's imbalance (benchmarks/imbalance.py measures it).
_base_ = './retina_r18_fpn_shapes.py'

data_root = 'data/shapes_sparse/'
img_scale = (384, 384)

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
train_dataloader = dict(
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
