"""RandomRot90: image and boxes turned together, exactly; its registry name
is ours alone; the augmentation presets build and keep boxes valid.

Expected boxes are worked out by hand for a 6 x 4 image, and checked
against the pixels: each box is painted into the image, and after the turn
its box must be the bounding box of the painted pixels."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config

from projects.focal_retina.datasets.transforms import RandomRot90
from tests.conftest import ROOT

W, H = 6, 4
BOX = [1.0, 0.0, 3.0, 1.0]  # x1 y1 x2 y2 in pixel edges of a 6 x 4 image
# (x, y) -> (y, W - x) | (W - x, H - y) | (H - y, x), corners re-sorted:
TURNED = {
    1: [0.0, 3.0, 1.0, 5.0],
    2: [3.0, 3.0, 5.0, 4.0],
    3: [3.0, 1.0, 4.0, 3.0],
}


def fixed(k):
    """A RandomRot90 that always turns k times."""
    return RandomRot90(prob=1.0, turns=(k, ))


def painted(boxes, h=H, w=W):
    """An image with each (integer) box painted in its own value."""
    img = np.zeros((h, w, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        img[int(y1):int(y2), int(x1):int(x2)] = 10 * (i + 1)
    return img


def painted_box(img, value):
    ys, xs = np.nonzero(img[..., 0] == value)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize('k', [1, 2, 3])
def test_boxes_turn_as_worked_out_by_hand(k):
    results = dict(
        img=painted([BOX]),
        img_shape=(H, W),
        gt_bboxes=HorizontalBoxes(torch.tensor([BOX])))
    out = fixed(k)(results)
    assert out['rot90_k'] == k
    expected_shape = (H, W) if k == 2 else (W, H)
    assert out['img'].shape[:2] == expected_shape
    assert out['img_shape'] == expected_shape
    assert isinstance(out['gt_bboxes'], HorizontalBoxes)
    assert out['gt_bboxes'].tensor.tolist() == [TURNED[k]]
    # the pixels went where the box went
    assert painted_box(out['img'], 10) == TURNED[k]


@pytest.mark.parametrize('k', [1, 2, 3])
def test_random_boxes_follow_their_pixels(k):
    rng = np.random.default_rng(k)
    h, w = 23, 37
    boxes = []
    for _ in range(5):
        x1, y1 = rng.integers(0, w - 1), rng.integers(0, h - 1)
        boxes.append(
            [x1, y1,
             rng.integers(x1 + 1, w + 1),
             rng.integers(y1 + 1, h + 1)])
    # painted one at a time, so that overlaps do not hide pixels
    for i, box in enumerate(boxes):
        results = dict(
            img=painted([box], h, w),
            img_shape=(h, w),
            gt_bboxes=HorizontalBoxes(torch.tensor([box], dtype=torch.float)))
        out = fixed(k)(results)
        assert out['gt_bboxes'].tensor[0].tolist() == painted_box(
            out['img'], 10), f'box {i}: {box}'


def test_four_turns_are_the_identity_and_numpy_boxes_work():
    boxes = np.array([BOX, [0.5, 1.5, 6.0, 4.0]], np.float32)
    results = dict(img=painted([BOX]), img_shape=(H, W), gt_bboxes=boxes)
    for k in (1, 3):  # one turn and three more: four in all
        results = fixed(k)(results)
    assert results['gt_bboxes'].dtype == np.float32
    np.testing.assert_array_equal(results['gt_bboxes'], boxes)
    np.testing.assert_array_equal(results['img'], painted([BOX]))


def test_homography_maps_the_corners():
    """The recorded matrix maps original pixel-edge points as the boxes."""
    out = fixed(1)(
        dict(
            img=painted([BOX]),
            img_shape=(H, W),
            homography_matrix=np.eye(3, dtype=np.float32)))
    x, y = 1.0, 0.0
    mapped = out['homography_matrix'] @ np.array([x, y, 1.0])
    assert mapped[:2].tolist() == [y, W - x]


def test_draws_every_turn_equally_often():
    """prob 0.75 and turns 1-3: k = 0..3 each about a quarter of draws."""
    np.random.seed(0)
    t = RandomRot90()
    counts = np.bincount([t._draw() for _ in range(4000)], minlength=4)
    assert counts.sum() == 4000
    assert np.all(np.abs(counts / 4000 - 0.25) < 0.03), counts


def test_no_turn_leaves_everything_alone():
    img = painted([BOX])
    out = RandomRot90(prob=0.0)(
        dict(img=img, img_shape=(H, W), gt_bboxes=np.array([BOX])))
    assert out['rot90_k'] == 0 and out['img'] is img


@pytest.mark.parametrize('kwargs', [
    dict(prob=1.5),
    dict(turns=()),
    dict(turns=(4, )),
    dict(turns=(True, )),
])
def test_bad_arguments_are_named(kwargs):
    with pytest.raises(ValueError, match='RandomRot90'):
        RandomRot90(**kwargs)


def test_name_is_ours_alone():
    """No registry the pipeline looks in (mmdet's, mmcv's, mmengine's) has
    another RandomRot90: the type resolves to this class."""
    from mmcv.transforms import TRANSFORMS as MMCV_TRANSFORMS
    from mmdet.registry import TRANSFORMS
    from mmengine.registry import TRANSFORMS as ROOT_TRANSFORMS
    assert TRANSFORMS.get('RandomRot90') is RandomRot90
    assert 'RandomRot90' not in MMCV_TRANSFORMS.module_dict
    assert 'RandomRot90' not in ROOT_TRANSFORMS.module_dict
    # every transform of the presets is mmdet's or ours
    for name in ('RandomResize', 'RandomCrop', 'PhotoMetricDistortion',
                 'RandomFlip'):
        assert TRANSFORMS.get(name) is not None


PRESETS = osp.join(ROOT, 'configs', '_base_', 'datasets',
                   'small_data_augment.py')


@pytest.mark.parametrize('preset', ['photo_pipeline', 'overhead_pipeline'])
def test_presets_keep_boxes_inside_the_image(preset, tmp_path):
    """Each preset runs on a real-sized image (without its loading steps)
    and its boxes stay inside the (cropped) image and positive."""
    import cv2
    from mmcv.transforms import Compose
    from mmdet.registry import TRANSFORMS
    from mmdet.utils import register_all_modules

    # mmdet's scope, as in training: RandomResize then resizes with mmdet's
    # Resize (boxes too), not mmcv's
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(PRESETS)
    pipeline = Compose([
        TRANSFORMS.build(s) for s in cfg[preset]
        if not s['type'].startswith('Load')
    ])
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    path = str(tmp_path / 'img.jpg')
    cv2.imwrite(path, img)
    boxes = np.array([[10, 20, 200, 150], [300, 300, 620, 470],
                      [100, 400, 140, 440]], np.float32)
    np.random.seed(0)
    seen = set()
    for _ in range(20):
        out = pipeline(
            dict(
                img=img.copy(),
                img_path=path,
                img_id=0,
                img_shape=img.shape[:2],
                ori_shape=img.shape[:2],
                gt_bboxes=HorizontalBoxes(torch.from_numpy(boxes)),
                gt_bboxes_labels=np.array([0, 1, 2]),
                gt_ignore_flags=np.zeros(3, bool)))
        if out is None:  # a crop without boxes: the dataset redraws
            continue
        sample = out['data_samples']
        h, w = out['inputs'].shape[1:]
        b = sample.gt_instances.bboxes.tensor
        assert len(b) and h <= 512 and w <= 512
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        seen.add(sample.metainfo.get('flip_direction'))
    assert seen  # ran
