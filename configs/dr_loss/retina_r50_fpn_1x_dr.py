# DR loss (Qian et al., CVPR 2020), R-50-FPN 1x, 800 px: 37.4 AP minival,
# 37.6 test-dev (public code idstcv/DR_loss, dr_R-50-FPN_1x.yaml). Our paper
# RetinaNet with the focal loss replaced and the public code's settings.
_base_ = '../retina_r50_fpn_1x.py'

model = dict(
    bbox_head=dict(
        # PRIOR_PROB 0.5: the ranking loss needs no rare-foreground prior.
        prior_prob=0.5,
        # sigmoid_dr_loss.py; softmax over the per-GPU batch as it ran
        # (grouping='per_image' is the paper's wording). No avg_factor.
        loss_cls=dict(
            _delete_=True,
            type='DRLoss',
            use_sigmoid=True,
            margin=0.5,
            pos_lambda=1.0,
            neg_lambda=0.1 / 1.252762968495368,  # 0.1 / ln 3.5
            L=6.0,
            tau=4.0,
            grouping='per_batch'),
        # maskrcnn-benchmark's RetinaNet box coder has weights (10, 10, 5,
        # 5), i.e. mmdet target_stds (0.1, 0.1, 0.2, 0.2) (our base: 1.0,
        # Detectron's paper setting), and divides the smooth L1 (beta 0.11)
        # sum by 4 x num_pos (BBOX_REG_WEIGHT 4.0; mmdet: num_pos). Both
        # change the deltas' scale and the box/class balance, so we follow
        # the public code.
        bbox_coder=dict(target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=0.25)),
    # FG_IOU 0.5 / BG_IOU 0.5 (no ignore band), allow_low_quality_matches.
    train_cfg=dict(
        assigner=dict(
            pos_iou_thr=0.5,
            neg_iou_thr=0.5,
            min_pos_iou=0.0,
            match_low_quality=True)),
    # INFERENCE_TH 0.2 (our FL base: 0.05), NMS_TH 0.5.
    test_cfg=dict(score_thr=0.2, nms=dict(type='nms', iou_threshold=0.5)))

# maskrcnn-benchmark (SOLVER.BIAS_LR_FACTOR 2, WEIGHT_DECAY_BIAS 0): biases
# train at 2x lr without weight decay; our base treats them as weights.
# The warm-up is the same in both: linear over 500 iterations from lr / 3.
# Remaining differences, shared with our focal-loss configs: MSRA caffe R-50
# with frozen BN affine there (torchvision weights, BN affine trained here)
# and the legacy +1 pixel box/anchor convention there.
optim_wrapper = dict(paramwise_cfg=dict(bias_lr_mult=2.0, bias_decay_mult=0.0))
