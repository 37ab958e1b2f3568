"""The evaluation plots on hand-made cases: the confusion matrix's counts
(mmdet's rules: score threshold, IoU match, background row and column) and
the precision-recall curves COCOeval computed for the AP table, both taken
through ``ZeroIfEmptyCocoMetric(keep_for_plots=True)`` as training and
``tools/test.py --plots`` take them."""
import csv
import json

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from projects.focal_retina.evaluation import (EvaluationRecord,
                                              ZeroIfEmptyCocoMetric,
                                              confusion_matrix,
                                              mmdet_confusion_matrix_tool,
                                              write_plots)

CLASSES = ('A', 'B')
A, B = 0, 1
# Four 64 x 64 images; boxes x1, y1, x2, y2. Category ids are COCO's
# (A = 1, B = 2; C = 3 is not a class of the model and must be ignored).
GTS = [
    [((0, 0, 10, 10), A), ((20, 20, 30, 30), B)],
    [((0, 0, 10, 10), A)],
    [((0, 0, 10, 10), B), ((40, 0, 50, 10), 'C')],
    [],  # a photo of no object
]
DETS = [  # (box, label, score)
    [
        ((0, 0, 10, 10), A, 0.9),  # on GT A: a hit
        ((20, 20, 30, 30), B, 0.2),  # on GT B, below 0.3: dropped
    ],
    [
        ((0, 0, 10, 10), B, 0.8),  # on GT A as B: wrong class
        ((50, 50, 60, 60), A, 0.7),  # on nothing: background
    ],
    [
        ((0, 0, 10, 10), B, 0.9),  # on GT B: a hit
        ((0, 0, 10, 9.5), B, 0.6),  # the same GT again (IoU 0.95)
        ((40, 40, 50, 50), B, 0.5),  # on nothing: background
    ],
    [((5, 5, 20, 20), A, 0.95)],  # on an empty photo: background
]
# By hand, with mmdet's rules (rows GT A, B, background; columns the
# detections' A, B, background):
#  (A, A) 1: image 0's hit.
#  (A, B) 1: image 1's wrong class; (A, bg) 1: that GT A has no A
#            detection, so it is also a miss.
#  (B, B) 2: image 2's hit and its duplicate (each match counts).
#  (B, bg) 1: image 0's GT B, whose only detection scored 0.2 < 0.3.
#  (bg, A) 2: image 1's box on nothing and image 3's on an empty photo;
#  (bg, B) 1: image 2's box on nothing.
#  (bg, bg) 0 always; the C box is not a class and counts nowhere.
EXPECTED = [[1, 1, 1], [0, 2, 1], [2, 1, 0]]


def coco_json(path, gts, img_size=64) -> str:
    cats = {A: 1, B: 2, 'C': 3}
    anns = []
    for i, boxes in enumerate(gts):
        for (x1, y1, x2, y2), label in boxes:
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=i + 1,
                    category_id=cats[label],
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1),
                    iscrowd=0))
    path.write_text(
        json.dumps(
            dict(
                images=[
                    dict(
                        id=i + 1,
                        file_name=f'{i}.png',
                        width=img_size,
                        height=img_size) for i in range(len(gts))
                ],
                annotations=anns,
                categories=[
                    dict(id=1, name='A'),
                    dict(id=2, name='B'),
                    dict(id=3, name='C')
                ])))
    return str(path)


def evaluate(ann_file, dets, img_size=64) -> tuple:
    """Feeds ``dets`` to the metric as the test loop does; returns the
    metric and its metrics."""
    metric = ZeroIfEmptyCocoMetric(ann_file=ann_file, keep_for_plots=True)
    metric.dataset_meta = dict(classes=CLASSES)
    for i, boxes in enumerate(dets):
        sample = DetDataSample(
            metainfo=dict(img_id=i + 1, ori_shape=(img_size, img_size)))
        sample.pred_instances = InstanceData(
            bboxes=torch.tensor([b for b, _, _ in boxes],
                                dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor([lab for _, lab, _ in boxes]),
            scores=torch.tensor([s for _, _, s in boxes]))
        metric.process({}, [sample.to_dict()])
    return metric, metric.evaluate(len(dets))


def test_mmdet_tool_is_found():
    tool = mmdet_confusion_matrix_tool()
    assert callable(tool.analyze_per_img_dets)
    assert callable(tool.plot_confusion_matrix)


def test_confusion_counts_by_hand():
    gts = [[
        dict(bbox=list(b), bbox_label=lab) for b, lab in boxes if lab != 'C'
    ] for boxes in GTS]
    preds = [
        dict(
            bboxes=np.array([b for b, _, _ in d], dtype=np.float32),
            labels=np.array([lab for _, lab, _ in d]),
            scores=np.array([s for _, _, s in d])) for d in DETS
    ]
    matrix = confusion_matrix(gts, preds, 2, score_thr=0.3, tp_iou_thr=0.5)
    assert matrix.tolist() == EXPECTED
    # At score 0.1 image 0's B detection is kept: a hit, not a miss.
    low = confusion_matrix(gts, preds, 2, score_thr=0.1)
    assert low[B].tolist() == [0, 3, 0]


def test_metric_keeps_the_evaluation_it_scored(tmp_path):
    ann = coco_json(tmp_path / 'val.json', GTS)
    metric, _ = evaluate(ann, DETS)
    record = metric.last_evaluation
    # Ground truth read from the json: x, y, w, h -> corners, category id
    # -> label, category C (not a class) left out.
    assert record.gts == [[
        dict(bbox=list(b), bbox_label=lab) for b, lab in boxes if lab != 'C'
    ] for boxes in GTS]
    assert record.precision.shape == (10, 101, 2, 4, 3)
    out = write_plots(record, str(tmp_path / 'plots'))
    counts = json.load(open(out['confusion_matrix.json']))
    assert counts['counts'] == EXPECTED
    assert counts['labels'] == ['A', 'B', 'background']
    for name in ('confusion_matrix.png', 'pr_curves.png'):
        img = cv2.imread(out[name])
        assert img is not None and min(img.shape[:2]) >= 300


def test_metric_without_the_option_keeps_nothing(tmp_path):
    ann = coco_json(tmp_path / 'val.json', GTS)
    metric = ZeroIfEmptyCocoMetric(ann_file=ann)
    assert not metric.keep_for_plots and metric.last_evaluation is None


def test_pr_curve_by_hand(tmp_path):
    """One class, two objects, three detections by score: a hit (IoU 1),
    a false positive, then a hit at IoU 0.625 (a match at the thresholds
    0.50, 0.55, 0.60, a false positive at 0.65 ... 0.95)."""
    gts = [[((0, 0, 10, 10), A), ((30, 30, 40, 40), A)]]
    dets = [[((0, 0, 10, 10), A, 0.9), ((50, 50, 60, 60), A, 0.8),
             ((30, 30, 40, 36.25), A, 0.7)]]
    ann = coco_json(tmp_path / 'val.json', gts)
    metric, metrics = evaluate(ann, dets)
    record = metric.last_evaluation
    # COCO's interpolated precision at recall r is the best precision at
    # any recall >= r. IoU 0.5: after each detection (precision, recall) =
    # (1, 1/2), (1/2, 1/2), (2/3, 1): 1 up to recall 0.50, 2/3 above.
    # IoU >= 0.65: (1, 1/2), (1/2, 1/2), (1/3, 1/2): 1 up to 0.50, then 0.
    recall = np.linspace(0, 1, 101)
    at50 = np.where(recall <= 0.5 + 1e-9, 1.0, 2 / 3)
    mean = np.where(recall <= 0.5 + 1e-9, 1.0, (3 * 2 / 3 + 7 * 0) / 10)
    write_plots(record, str(tmp_path / 'plots'))
    with open(tmp_path / 'plots' / 'pr_curves.csv') as f:
        rows = [r for r in csv.DictReader(f) if r['class'] == 'A']
    assert [float(r['recall']) for r in rows] == pytest.approx(recall)
    assert [float(r['precision_iou50']) for r in rows] == pytest.approx(at50)
    assert [float(r['precision_iou50_95'])
            for r in rows] == pytest.approx(mean)
    # The curves' means are mmdet's own AP_50 and AP of this one class.
    assert metrics['coco/bbox_mAP_50'] == round(at50.mean(), 3)
    assert metrics['coco/bbox_mAP'] == round(mean.mean(), 3)
    # B has no ground truth: COCOeval's -1, written as nan.
    b_rows = [
        r for r in csv.DictReader(open(tmp_path / 'plots' / 'pr_curves.csv'))
        if r['class'] == 'B'
    ]
    assert all(r['precision_iou50'] == 'nan' for r in b_rows)


def test_no_detection_writes_the_matrix_only(tmp_path):
    ann = coco_json(tmp_path / 'val.json', GTS)
    metric, metrics = evaluate(ann, [[]] * len(GTS))
    assert metrics['coco/bbox_mAP'] == 0.0
    out = write_plots(metric.last_evaluation, str(tmp_path / 'plots'))
    assert sorted(out) == ['confusion_matrix.json', 'confusion_matrix.png']
    counts = json.load(open(out['confusion_matrix.json']))['counts']
    assert counts == [[0, 0, 2], [0, 0, 2], [0, 0, 0]]  # every GT missed


def test_record_of_mismatched_lengths_is_refused(tmp_path):
    record = EvaluationRecord(CLASSES, [[]], [])
    with pytest.raises(ValueError, match='1 images of ground truth but 0'):
        write_plots(record, str(tmp_path))
