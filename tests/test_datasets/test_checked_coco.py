"""Bad annotations and image files: dropped, clipped or excluded, each
counted and named; malformed files raise AnnotationError naming the place.
Expected instances are worked out by hand from each box and the image size.
"""
import json
import math

import cv2
import numpy as np
import pytest
from mmdet.evaluation import CocoMetric
from mmengine.registry import init_default_scope

from projects.focal_retina.datasets import AnnotationError, CheckedCocoDataset
from projects.focal_retina.evaluation import ZeroIfEmptyCocoMetric

CATS = [dict(id=1, name='a'), dict(id=7, name='b')]


@pytest.fixture(autouse=True)
def mmdet_scope():
    """mmdet's transforms by name (conftest restores the scope after)."""
    init_default_scope('mmdet')


TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs')
]


def write_images(root, names, size=(40, 50)):
    (root / 'img').mkdir(exist_ok=True)
    for n in names:
        cv2.imwrite(str(root / 'img' / n), np.full((*size, 3), 90, np.uint8))


def write_ann(root, images, anns, cats=CATS):
    path = root / 'ann.json'
    # json.dump writes float('nan') as NaN, which json.load reads back.
    path.write_text(
        json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return str(path)


def dataset(root, ann, **kwargs):
    return CheckedCocoDataset(
        ann_file=ann,
        data_prefix=dict(img=str(root / 'img') + '/'),
        metainfo=dict(classes=('a', 'b')),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=kwargs.pop('pipeline', []),
        **kwargs)


def infos(ds):
    """The parsed data infos (mmengine serialises ``data_list`` away)."""
    return [ds.get_data_info(i) for i in range(len(ds))]


def img(i, w=50, h=40):
    return dict(id=i, file_name=f'{i}.png', width=w, height=h)


def ann(i, image_id, bbox, cat=1, **extra):
    area = extra.pop('area') if 'area' in extra else bbox[2] * bbox[3]
    return dict(
        id=i,
        image_id=image_id,
        bbox=bbox,
        category_id=cat,
        area=area,
        iscrowd=0,
        **extra)


def test_degenerate_annotations_are_dropped_or_clipped(tmp_path):
    write_images(tmp_path, ['1.png', '2.png'])
    nan = float('nan')
    anns = [
        ann(1, 1, [5, 5, 10, 10]),  # kept as is
        ann(2, 1, [nan, 5, 10, 10]),  # non-finite
        ann(3, 1, [5, 5, 0, 10]),  # zero width
        ann(4, 1, [5, 5, 10, -3]),  # negative height
        ann(5, 1, [60, 5, 10, 10]),  # right of the 50 px wide image
        ann(6, 1, [45, 30, 10, 20], cat=7),  # clipped to [45, 30, 50, 40]
        ann(7, 1, [-5, -5, 5.5, 5.5]),  # 0.5 px once clipped
        ann(8, 1, [5, 5, 10, 10], cat=3),  # unknown category
        dict(id=9, image_id=1, bbox=[1, 2, 3, 4], category_id=1),  # no area
        ann(10, 1, [1, 1, 4, 4], area=0),  # mmdet's area check, kept
    ]
    ds = dataset(tmp_path, write_ann(tmp_path, [img(1), img(2)], anns))
    by_id = {d['img_id']: d['instances'] for d in infos(ds)}
    assert [(i['bbox'], i['bbox_label'])
            for i in by_id[1]] == [([5, 5, 15, 15], 0), ([45, 30, 50, 40], 1),
                                   ([1, 2, 4, 6], 0)]
    assert by_id[2] == []  # an image without boxes stays, pure negative
    assert ds.drops == {
        'boxes dropped: non-finite coordinates': 1,
        'boxes dropped: zero or negative size': 2,
        'boxes dropped: outside the image': 1,
        'boxes dropped: under 1 px once clipped': 1,
        'boxes dropped: unknown category_id': 1,
        'boxes dropped: area not positive': 1,
        'boxes clipped to the image': 1,
    }
    assert ds.examples['boxes dropped: unknown category_id'] == \
        'annotation 8 of image 1'


@pytest.mark.parametrize('images,anns,match', [
    ([img(1)], [dict(id=4, image_id=1, category_id=1)],
     r'annotation 4 of image 1: bbox=None, expected \[x, y, w, h\]'),
    ([img(1)], [ann(5, 1, [1, 2, 3], area=6)
                ], r'annotation 5 of image 1: bbox='),
    ([img(1)], [ann(6, 1, ['1', 2, 3, 4], area=12)], 'annotation 6'),
    ([dict(id=1, width=5, height=5)], [], 'image 1 has no "file_name"'),
    ([img(1)], [dict(id=3, bbox=[1, 1, 2, 2], category_id=1)
                ], 'not a COCO detection file'),
])
def test_malformed_files_name_the_place(tmp_path, images, anns, match):
    write_images(tmp_path, ['1.png'])
    with pytest.raises(AnnotationError, match=match) as err:
        dataset(tmp_path, write_ann(tmp_path, images, anns))
    assert 'ann.json' in str(err.value)


def test_image_entry_with_bad_size_is_dropped(tmp_path):
    write_images(tmp_path, ['1.png', '2.png'])
    ds = dataset(
        tmp_path,
        write_ann(tmp_path, [img(1), img(2, w=0)], [ann(1, 2, [1, 1, 2, 2])]))
    assert [d['img_id'] for d in infos(ds)] == [1]
    assert ds.drops['images dropped: width/height not positive numbers'] \
        == 1


def test_missing_and_corrupt_images_are_excluded_by_name(tmp_path):
    write_images(tmp_path, ['1.png'])
    (tmp_path / 'img' / '2.png').write_bytes(b'not a png at all')
    anns = [ann(1, 1, [1, 1, 9, 9]), ann(2, 2, [1, 1, 9, 9])]
    ann_file = write_ann(tmp_path, [img(1), img(2), img(3)], anns)
    test_ds = dataset(tmp_path, ann_file, test_mode=True)  # decodes
    assert [d['img_id'] for d in infos(test_ds)] == [1]
    assert test_ds.excluded == [
        f'{tmp_path}/img/2.png (cannot be decoded)',
        f'{tmp_path}/img/3.png (missing)'
    ]
    # Training checks existence only (fast on 10^5 images); the corrupt
    # file is skipped when it is loaded and another image is drawn.
    train_ds = dataset(tmp_path, ann_file, pipeline=TRAIN_PIPELINE)
    assert [d['img_id'] for d in infos(train_ds)] == [1, 2]
    assert train_ds.excluded == [f'{tmp_path}/img/3.png (missing)']
    sample = train_ds[1]
    assert sample['data_samples'].img_id == 1
    assert train_ds._skipped >= 1  # the random refetch may draw it again


def test_no_usable_image_is_a_named_error(tmp_path):
    (tmp_path / 'img').mkdir()
    ann_file = write_ann(tmp_path, [img(1)], [ann(1, 1, [1, 1, 9, 9])])
    with pytest.raises(
            AnnotationError, match=r'ann.json: no usable image '
            r'\(excluded: 1'):
        dataset(tmp_path, ann_file)


def test_check_images_is_validated(tmp_path):
    with pytest.raises(ValueError, match="check_images='all'"):
        dataset(tmp_path, 'x.json', check_images='all')


def coco_results(boxes_by_image):
    """CocoMetric ``results``: (gt, pred) pairs with predictions as mmdet
    packs them (x1, y1, x2, y2 numpy boxes)."""
    out = []
    for img_id, boxes in boxes_by_image.items():
        pred = dict(
            img_id=img_id,
            bboxes=np.array(boxes, np.float32).reshape(-1, 4),
            scores=np.full(len(boxes), 0.9, np.float32),
            labels=np.zeros(len(boxes), np.int64))
        out.append((dict(img_id=img_id, width=50, height=40), pred))
    return out


def metric(cls, ann_file):
    m = cls(ann_file=ann_file, metric='bbox')
    m.dataset_meta = dict(classes=('a', 'b'))
    return m


def test_nothing_detected_gives_ap_zero(tmp_path):
    ann_file = write_ann(tmp_path, [img(1)], [ann(1, 1, [1, 1, 9, 9])])
    results = coco_results({1: []})
    assert metric(CocoMetric, ann_file).compute_metrics(results) == {}
    got = metric(ZeroIfEmptyCocoMetric, ann_file).compute_metrics(results)
    assert got == {
        f'bbox_{k}': 0.0
        for k in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
    }


def test_excluded_images_are_left_out_of_the_ap(tmp_path):
    """Image 2 could not be read: the AP is over image 1, where every
    object is found exactly (AP 1); stock CocoMetric counts image 2's
    objects as missed."""
    ann_file = write_ann(tmp_path, [img(1), img(2)], [
        ann(1, 1, [2, 2, 20, 20]),
        ann(2, 2, [2, 2, 20, 20]),
    ])
    results = coco_results({1: [[2, 2, 22, 22]]})
    ours = metric(ZeroIfEmptyCocoMetric, ann_file).compute_metrics(results)
    stock = metric(CocoMetric, ann_file).compute_metrics(results)
    assert math.isclose(ours['bbox_mAP_50'], 1.0)
    assert stock['bbox_mAP_50'] < 0.6


def test_classes_in_another_order_than_the_file_are_refused(tmp_path):
    """mmdet numbers the labels in the file's category order whatever the
    order of metainfo.classes: ('b', 'a') on a file listing a, b would name
    every 'a' box 'b'. Stock mmdet accepts it silently."""
    write_images(tmp_path, ['1.png'])
    path = write_ann(tmp_path, [img(1)], [ann(1, 1, [5, 5, 10, 10], cat=7)])
    with pytest.raises(AnnotationError) as err:
        CheckedCocoDataset(
            ann_file=path,
            data_prefix=dict(img=str(tmp_path / 'img') + '/'),
            metainfo=dict(classes=('b', 'a')),
            pipeline=[])
    assert str(err.value) == (
        f"{path}: metainfo.classes ('b', 'a') are in another order than "
        "the file's categories; mmdet numbers the labels in the file's "
        "order, so write classes = ('a', 'b')")


def test_a_class_the_file_lacks_is_refused(tmp_path):
    write_images(tmp_path, ['1.png'])
    path = write_ann(tmp_path, [img(1)], [ann(1, 1, [5, 5, 10, 10])])
    with pytest.raises(AnnotationError, match=r"names 'c', which the "
                       r"file's categories do not have \(it has \('a', "
                       r"'b'\)\)"):
        CheckedCocoDataset(
            ann_file=path,
            data_prefix=dict(img=str(tmp_path / 'img') + '/'),
            metainfo=dict(classes=('a', 'c')),
            pipeline=[])


def test_a_subset_in_the_file_order_labels_as_mmdet_does(tmp_path):
    """Training on some of the file's classes stays allowed: label 0 is
    category 7 ('b'), the only class named."""
    write_images(tmp_path, ['1.png'])
    path = write_ann(tmp_path, [img(1)], [
        ann(1, 1, [5, 5, 10, 10], cat=1),
        ann(2, 1, [20, 5, 10, 10], cat=7)
    ])
    ds = CheckedCocoDataset(
        ann_file=path,
        data_prefix=dict(img=str(tmp_path / 'img') + '/'),
        metainfo=dict(classes=('b', )),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=[])
    labels = [i['bbox_label'] for i in infos(ds)[0]['instances']]
    assert labels == [0]
