# The demo RetinaNet on the sparse shapes (tools/make_shapes.py --preset
# sparse: 384 px images with 1-4 objects of 14-32 px): the same model,
# schedule and optimizer as retina_r18_fpn_shapes.py, fed at 384 px so that
# the model sees ~28k anchors per image against ~20 positive ones, the
# paper's imbalance (benchmarks/imbalance.py measures it).
_base_ = './retina_r18_fpn_shapes.py'

data_root = 'data/shapes_sparse/'
img_scale = (384, 384)

# The demo's pipelines at this scale (step 2 of train, step 1 of test is
# the Resize).
train_pipeline = _base_.train_pipeline
train_pipeline[2].scale = img_scale
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale = img_scale
train_dataloader = dict(
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
