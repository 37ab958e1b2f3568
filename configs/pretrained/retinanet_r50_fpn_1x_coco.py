# mmdet's released RetinaNet R-50-FPN 1x, COCO (box AP 36.5, val2017), as it
# was trained: mmdet's stock model (no ReLU before P7, unlike the paper
# configs), 80 COCO classes, and the URL of its weights. Run it on photos:
#   python tools/infer.py configs/pretrained/retinanet_r50_fpn_1x_coco.py \
#       WEIGHTS photo.jpg --classes person chair
# WEIGHTS: the URL below or a downloaded copy (docs/own_data.md, offline).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(
    imports=['projects.focal_retina'], allow_failed_imports=False)
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
             'retinanet_r50_fpn_1x_coco/'
             'retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth')
