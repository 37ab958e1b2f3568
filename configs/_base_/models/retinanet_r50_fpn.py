# RetinaNet as the paper defines it (Sec. 4, Fig. 3; SPEC.md):
# P3-P7 with P6 = 3x3/2 conv on C5 and ReLU before P7 (mmdet's default has no
# ReLU); 9 anchors of 4x the stride; IoU 0.5/0.4 assignment; smooth L1 with
# beta = 0.11 (mmdet's default is L1); prior pi = 0.01; inference with score
# 0.05, top 1000 per level, NMS 0.5 and 100 detections per image.
# FocalRetinaHead is mmdet's RetinaHead with the paper's normaliser (positive
# anchors over the whole batch, all-reduced over GPUs) and a prior switch;
# FocalFamilyLoss is the fused FL / alpha-CE / FL* loss.
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_input',
        relu_before_extra_convs=True,
        num_outs=5),
    bbox_head=dict(
        type='FocalRetinaHead',
        num_classes=80,
        prior_prob=0.01,
        normalizer='global',
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(
            type='FocalFamilyLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.4,
            min_pos_iou=0,
            ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100))
