# DR loss (Qian et al., CVPR 2020), R-101-FPN 2x, multi-scale training
# 640-800: 41.5 AP minival, 41.7 test-dev, the paper's headline (vs 39.1 of
# FL, Lin et al. Table 2) (public code dr_R-101-FPN_2x.yaml).
_base_ = './retina_r50_fpn_1x_dr.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')),
    # INFERENCE_TH 0.1 for this model (0.2 for R-50 1x).
    test_cfg=dict(score_thr=0.1))

# MIN_SIZE_TRAIN (640, 672, ..., 800), MAX_SIZE 1333, as in
# configs/retina_r101_fpn_1.5x.py; test at 800.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, s) for s in range(640, 801, 32)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# 2x: 180k iterations of 16 images, lr / 10 at 120k and 160k (2/3 and 8/9
# of the run, as the base), warm-up still 500 iterations.
max_iters = 180000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(
        type='BudgetLinearLR',
        start_factor=1.0 / 3,
        warmup_fraction=500 / max_iters,
        by_epoch=False),
    dict(
        type='BudgetMultiStepLR',
        milestone_fractions=[120000 / max_iters, 160000 / max_iters],
        gamma=0.1,
        by_epoch=False)
]
