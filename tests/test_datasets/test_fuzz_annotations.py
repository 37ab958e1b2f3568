"""Fuzz pass over annotation files: seeded random COCO-style files with
degenerate boxes, missing fields, wrong types, odd image sizes and missing
or corrupt images. Loading and one pass through the training pipeline must
either succeed with the documented handling (every instance finite, inside
the image, at least 1 px, a known label) or raise AnnotationError — never a
raw KeyError/IndexError/TypeError. A few cases then run one training
iteration of a tiny RetinaNet on what loaded.
"""
import json
import math

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from projects.focal_retina.datasets import AnnotationError, CheckedCocoDataset

NUM_CASES = 150
PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]


def random_value(rng):
    return [
        None, 'x', -1, 0, 0.5, 3, 1e9,
        float('nan'),
        float('inf'), [], [1, 2], {}
    ][rng.integers(12)]


def random_box(rng, w, h):
    kind = rng.integers(6)
    if kind == 0:  # plain
        x, y = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
        return [x, y, rng.uniform(1, w - x), rng.uniform(1, h - y)]
    if kind == 1:  # degenerate sizes
        return [1, 1, float(rng.choice([0, -2, 0.3])), 5]
    if kind == 2:  # outside or straddling the border
        return [
            float(rng.uniform(-2 * w, 2 * w)),
            float(rng.uniform(-2 * h, 2 * h)), 30.0, 30.0
        ]
    if kind == 3:  # non-finite
        return [float('nan'), 1, float('inf'), 2]
    if kind == 4:  # wrong type or length
        return random_value(rng)
    return [int(v) for v in rng.integers(-5, 60, 4)]


def random_case(rng, root):
    """Writes one annotation file (and its images) under ``root``."""
    images, anns = [], []
    (root / 'img').mkdir(parents=True, exist_ok=True)
    for i in range(1, int(rng.integers(1, 4)) + 1):
        w, h = (int(v) for v in rng.integers(8, 80, 2))
        entry = dict(id=i, file_name=f'{i}.png', width=w, height=h)
        fault = rng.integers(10)
        if fault == 0:
            del entry[str(rng.choice(['file_name', 'width', 'height']))]
        elif fault == 1:
            entry[str(rng.choice(['width', 'height']))] = random_value(rng)
        images.append(entry)
        state = rng.integers(8)
        if state == 0:
            pass  # the file is missing
        elif state == 1:
            (root / 'img' / f'{i}.png').write_bytes(b'\x89PNG broken')
        else:
            cv2.imwrite(
                str(root / 'img' / f'{i}.png'),
                rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for _ in range(int(rng.integers(0, 5))):
            a = dict(
                id=len(anns) + 1,
                image_id=i,
                bbox=random_box(rng, w, h),
                category_id=int(rng.choice([1, 2, 5])),
                iscrowd=int(rng.integers(2) if rng.random() < 0.2 else 0))
            if rng.random() < 0.8:
                a['area'] = 100.0
            if rng.random() < 0.05:
                del a[str(rng.choice(['image_id', 'category_id', 'bbox']))]
            anns.append(a)
    data = dict(
        images=images,
        annotations=anns,
        categories=[dict(id=1, name='a'),
                    dict(id=2, name='b')])
    if rng.random() < 0.05:
        del data[str(rng.choice(['images', 'annotations']))]
    path = root / 'ann.json'
    path.write_text(json.dumps(data))
    return str(path)


def check_loaded(ds):
    for info in (ds.get_data_info(i) for i in range(len(ds))):
        w, h = info['width'], info['height']
        for inst in info['instances']:
            x1, y1, x2, y2 = inst['bbox']
            assert all(math.isfinite(v) for v in inst['bbox'])
            assert 0 <= x1 and x2 <= w and 0 <= y1 and y2 <= h
            assert x2 - x1 >= 1 and y2 - y1 >= 1
            assert inst['bbox_label'] in (0, 1)


def load_case(root, ann_file):
    return CheckedCocoDataset(
        ann_file=ann_file,
        data_prefix=dict(img=str(root / 'img') + '/'),
        metainfo=dict(classes=('a', 'b')),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=PIPELINE)


def test_random_annotation_files(tmp_path):
    init_default_scope('mmdet')
    rng = np.random.default_rng(0)
    outcomes = {'loaded': 0, 'AnnotationError': 0, 'unreadable': 0}
    for case in range(NUM_CASES):
        root = tmp_path / str(case)
        ann_file = random_case(rng, root)
        try:
            ds = load_case(root, ann_file)
        except AnnotationError as exc:
            assert 'ann.json' in str(exc)
            outcomes['AnnotationError'] += 1
            continue
        check_loaded(ds)
        try:
            sample = ds[int(rng.integers(len(ds)))]  # skips unreadable ones
        except AnnotationError as exc:  # every remaining file is corrupt
            assert 'none of the' in str(exc)
            outcomes['unreadable'] += 1
            continue
        boxes = sample['data_samples'].gt_instances.bboxes.tensor
        assert torch.isfinite(boxes).all()
        outcomes['loaded'] += 1
    print(f'{NUM_CASES} fuzz cases: {outcomes}')
    # The generator reaches every outcome (it is not testing nothing).
    assert all(n > 0 for n in outcomes.values()), outcomes


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_one_training_iteration_on_fuzzed_data(tmp_path, seed):
    """What loaded trains: a tiny RetinaNet's loss is finite on it."""
    from mmdet.registry import MODELS
    from mmengine.dataset import pseudo_collate
    init_default_scope('mmdet')
    rng = np.random.default_rng(100 + seed)
    for attempt in range(50):  # the first case that loads
        root = tmp_path / str(attempt)
        try:
            ds = load_case(root, random_case(rng, root))
            batch = pseudo_collate([ds[i % len(ds)] for i in range(2)])
            break
        except AnnotationError:
            continue
    model = MODELS.build(
        dict(
            type='RetinaNet',
            data_preprocessor=dict(
                type='DetDataPreprocessor', pad_size_divisor=32),
            backbone=dict(
                type='ResNet',
                depth=18,
                num_stages=4,
                out_indices=(1, 2, 3),
                init_cfg=None),
            neck=dict(
                type='FPN',
                in_channels=[128, 256, 512],
                out_channels=16,
                start_level=0,
                add_extra_convs='on_input',
                num_outs=5),
            bbox_head=dict(
                type='FocalRetinaHead',
                num_classes=2,
                in_channels=16,
                feat_channels=16,
                stacked_convs=1,
                anchor_generator=dict(
                    type='AnchorGenerator',
                    octave_base_scale=4,
                    scales_per_octave=1,
                    ratios=[1.0],
                    strides=[8, 16, 32, 64, 128]),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                loss_cls=dict(type='FocalFamilyLoss'),
                loss_bbox=dict(type='SmoothL1Loss', beta=0.11)),
            train_cfg=dict(
                assigner=dict(
                    type='MaxIoUAssigner',
                    pos_iou_thr=0.5,
                    neg_iou_thr=0.4,
                    min_pos_iou=0),
                sampler=dict(type='PseudoSampler'),
                allowed_border=-1,
                pos_weight=-1,
                debug=False)))
    losses = model(
        **model.data_preprocessor(batch, training=True), mode='loss')
    for name, value in losses.items():
        for v in value if isinstance(value, list) else [value]:
            assert torch.isfinite(v).all(), name
