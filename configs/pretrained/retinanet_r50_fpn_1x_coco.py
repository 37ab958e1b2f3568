# mmdet's released RetinaNet R-50-FPN 1x, COCO (box AP 36.5, val2017), as it
# was trained: mmdet's stock model (no ReLU before P7, unlike the paper
# configs), 80 COCO classes, and the URL of its weights. Run it on photos:
#   python tools/infer.py configs/pretrained/retinanet_r50_fpn_1x_coco.py \
#       WEIGHTS photo.jpg --classes person chair
# WEIGHTS: the URL below or a downloaded copy (docs/own_data.md, offline).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(
    imports=['projects.focal_retina'], allow_failed_imports=False)
# mmdet's model computed by our components: FocalRetinaHead (a RetinaHead,
# same keys) with mmdet's normaliser, prior and init, and FocalFamilyLoss
# (same FL, gamma 2, alpha .25) instead of FocalLoss, whose CPU path is a
# Python fallback. mmdet's neck and L1 box loss are kept. Outputs,
# detections, losses and gradients equal mmdet's
# (tests/test_models/test_stock_equivalence.py).
model = dict(
    bbox_head=dict(
        type='FocalRetinaHead',
        normalizer='per_gpu',  # mmdet: sum over images of max(num_pos, 1)
        prior_prob=0.01,
        # RetinaHead's own default, so a seed gives mmdet's initial weights
        # (the override draws retina_cls again after the towers).
        init_cfg=dict(
            type='Normal',
            layer='Conv2d',
            std=0.01,
            override=dict(
                type='Normal', name='retina_cls', std=0.01, bias_prob=0.01)),
        loss_cls=dict(
            _delete_=True,
            type='FocalFamilyLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0)))
# tools/test.py runs the model in channels-last layout (faster on the CPU;
# the same detections to float rounding), training too under --amp on the
# CPU (ChannelsLastHook; docs/benchmarks.md, fine-tuning speed).
custom_hooks = [dict(type='ChannelsLastHook', when='bf16')]
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
             'retinanet_r50_fpn_1x_coco/'
             'retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth')
