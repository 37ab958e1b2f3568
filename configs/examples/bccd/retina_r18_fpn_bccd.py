# BCCD on the own-data recipe (configs/own_data/retina_r18_fpn_own_data.py:
# R-18 from scratch, 512 px), the "from scratch" row of docs/own_data.md,
# "Measured: BCCD". BCCD: 364 blood-smear photos of 640 x 480, classes RBC,
# WBC and Platelets, in the Pascal VOC devkit layout (Annotations/,
# JPEGImages/, ImageSets/Main/{trainval,test}.txt) at data/bccd/ (a link to
# it will do). benchmarks/bccd.py converts its trainval and test splits to
# COCO json in data/bccd_coco/ (outside the devkit, which may be read-only)
# and runs the table's rows.
_base_ = '../../own_data/retina_r18_fpn_own_data.py'

classes = ('RBC', 'WBC', 'Platelets')
# data_root is the folder above the devkit and the converted files, so that
# both resolve through a data/bccd link.
data_root = 'data/'
img_prefix = 'bccd/JPEGImages/'
model = dict(bbox_head=dict(num_classes=len(classes)))
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='bccd_coco/trainval.json',
        data_prefix=dict(img=img_prefix)))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='bccd_coco/test.json',
        data_prefix=dict(img=img_prefix)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'bccd_coco/test.json')
test_evaluator = val_evaluator
# The table's runs: a 240-iteration schedule (warm-up 24, lr steps at 182
# and 220) within a 20-minute --time-budget, validated on the 72 test
# photos every 40 iterations (and after the last one) for the AP curve. The
# last checkpoint is the one the table reports, not the best.
train_cfg = dict(max_iters=240, val_interval=40)
# The validation records' step is the iteration (mmengine's default, the
# epoch, is 0 in an iteration-based loop), in scalars.json and TensorBoard.
default_hooks = dict(
    checkpoint=dict(save_best=None),
    logger=dict(log_metric_by_epoch=False))
