# mmdet's released RetinaNet R-18-FPN 1x, COCO (box AP 31.7, val2017), as it
# was trained (mmdet's stock model, 80 COCO classes), with the URL of its
# weights.
_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'

custom_imports = dict(
    imports=['projects.focal_retina'], allow_failed_imports=False)
# mmdet's model on our head and fused loss, as retinanet_r50_fpn_1x_coco.py
# explains (mmdet's R-18 config does not inherit its R-50 one, so the head
# is restated; the tests check that the three configs agree).
model = dict(
    bbox_head=dict(
        type='FocalRetinaHead',
        normalizer='per_gpu',
        prior_prob=0.01,
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
             'retinanet_r18_fpn_1x_coco/'
             'retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth')
