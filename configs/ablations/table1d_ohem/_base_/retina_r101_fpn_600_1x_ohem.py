# Table 1d OHEM base: CE (gamma = 0, no alpha: sigmoid CE summed over the
# classes, the score of every example) with one-stage OHEM (Sec. 5.1); each
# leaf sets the batch size per image, the NMS IoU and, for OHEM 1:3,
# pos_fraction = 0.25. See projects/focal_retina/task_modules/ohem.py.
_base_ = './retina_r101_fpn_600_1x.py'

model = dict(
    bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=None)),
    train_cfg=dict(
        sampler=dict(
            _delete_=True,
            type='OneStageOHEMSampler',
            batch_size=256,
            nms_iou=0.7,
            pos_fraction=None)))
