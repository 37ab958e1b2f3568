"""Tiled detection: windows cover the image with the asked overlap, and an
object cut by window borders comes out once, as its whole box.

The detector here is a stand-in that finds the painted objects of a crop
exactly (connected components of non-background pixels): what a perfect
detector sees through each window, truncated boxes included. The expected
boxes are the painted rectangles, known by construction.
"""
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from projects.focal_retina.inference import (detect_tiled, merge_tiles,
                                             tile_windows)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def component_detector(crop: np.ndarray) -> DetDataSample:
    """Boxes (x1, y1, x2, y2; x2/y2 exclusive) of the painted components
    of a crop; label = the painted value - 1, score 0.9."""
    gray = crop[..., 0]
    boxes, labels = [], []
    for value in np.unique(gray[gray > 0]):
        n, _, stats, _ = cv2.connectedComponentsWithStats(
            (gray == value).astype(np.uint8), connectivity=4)
        for x, y, w, h, _ in stats[1:]:
            boxes.append([x, y, x + w, y + h])
            labels.append(int(value) - 1)
    inst = InstanceData()
    inst.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    inst.labels = torch.tensor(labels, dtype=torch.long)
    inst.scores = torch.full((len(boxes), ), 0.9)
    sample = DetDataSample(metainfo=dict(img_shape=crop.shape[:2]))
    sample.pred_instances = inst
    return sample


def painted(height, width, boxes):
    img = np.zeros((height, width, 3), np.uint8)
    for x0, y0, x1, y1, label in boxes:
        img[y0:y1, x0:x1] = label + 1
    return img


@pytest.mark.parametrize('height,width,tile,overlap', [
    (768, 1024, 512, 0.2),
    (100, 100, 512, 0.2),
    (513, 1000, 256, 0.5),
    (64, 300, 64, 0.0),
])
def test_windows_cover_the_image_with_the_overlap(height, width, tile,
                                                  overlap):
    wins = tile_windows(height, width, tile, overlap)
    cover = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in wins:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x1 - x0 == min(tile, width) and y1 - y0 == min(tile, height)
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    xs = sorted({w[0] for w in wins})
    for a, b in zip(xs, xs[1:]):  # neighbours share >= overlap * tile
        assert a + tile - b >= overlap * tile


def test_window_starts_by_hand():
    # width 1024, tile 512, stride int(512 * 0.8) = 409: starts 0, 409 and
    # the last window flush with the border at 512.
    wins = tile_windows(768, 1024, 512, 0.2)
    assert sorted({w[0] for w in wins}) == [0, 409, 512]
    assert sorted({w[1] for w in wins}) == [0, 256]
    assert len(wins) == 6


@pytest.mark.parametrize('bad',
                         [dict(tile=0),
                          dict(overlap=1.0),
                          dict(overlap=-0.1)])
def test_invalid_tiling_is_refused(bad):
    args = dict(tile=512, overlap=0.2)
    args.update(bad)
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        tile_windows(100, 100, **args)


def test_objects_across_window_borders_come_out_once_and_whole():
    # Each object is cut by an inner window border (x = 409, 512, 921;
    # y = 256, 512) and smaller than the 102 px overlap.
    objects = [(482, 120, 542, 180, 0), (374, 565, 444, 635, 1),
               (881, 360, 961, 440, 2), (155, 211, 245, 301, 3),
               (650, 462, 750, 562, 0), (20, 20, 60, 60, 1)]
    img = painted(768, 1024, objects)
    # Without the merge, the windows report truncated pieces: more boxes.
    wins = tile_windows(768, 1024, 512, 0.2)
    raw = sum(
        len(component_detector(img[y0:y1, x0:x1]).pred_instances)
        for x0, y0, x1, y1 in wins)
    assert raw > len(objects)
    merged = detect_tiled(component_detector, img, 512, 0.2).pred_instances
    got = sorted(
        tuple(int(v) for v in b) + (int(lab), )
        for b, lab in zip(merged.bboxes.round(), merged.labels))
    assert got == sorted(objects)
    assert merged.bboxes.dtype == torch.float32


def test_nms_alone_keeps_a_half_object():
    """Why the cut-box step exists: a box cut in half has IoU 0.5 with the
    whole one, which class-wise NMS at 0.5 does not suppress."""
    obj = [(462, 100, 562, 200, 0)]  # cut by x = 512 in windows 0 and 2
    img = painted(300, 1024, obj)
    wins = tile_windows(300, 1024, 512, 0.2)
    samples = [
        component_detector(img[y0:y1, x0:x1]) for x0, y0, x1, y1 in wins
    ]
    out = merge_tiles(samples, wins, (300, 1024), contain_thr=1.1)
    assert len(out.pred_instances) == 3  # whole box + two halves
    out = merge_tiles(samples, wins, (300, 1024))
    assert out.pred_instances.bboxes.tolist() == [[462, 100, 562, 200]]


def test_object_larger_than_the_overlap_is_kept():
    """An object no window sees whole keeps its pieces (nothing contains
    them): detections are never dropped for lack of a whole view."""
    obj = [(300, 50, 700, 150, 0)]  # 400 px wide, overlap 102 px
    img = painted(200, 1024, obj)
    out = detect_tiled(component_detector, img, 512, 0.2).pred_instances
    assert len(out) >= 1
    xs = out.bboxes[:, [0, 2]]
    assert xs.min() == 300 and xs.max() == 700


def test_empty_image_and_one_pixel_object():
    img = np.zeros((600, 900, 3), np.uint8)
    assert len(detect_tiled(component_detector, img, 256).pred_instances) \
        == 0
    img[300, 450] = 1
    out = detect_tiled(component_detector, img, 256).pred_instances
    assert out.bboxes.tolist() == [[450, 300, 451, 301]]


def test_same_place_other_class_is_not_merged():
    img = painted(300, 1024, [(462, 100, 562, 150, 0),
                              (462, 150, 562, 200, 1)])
    out = detect_tiled(component_detector, img, 512, 0.2).pred_instances
    assert sorted(out.labels.tolist()) == [0, 1]


def test_example_large_photo_objects_straddle_borders(tmp_path):
    """The README example's large photo has what its docstring says."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    from make_own_data_example import large_photo
    _, boxes = large_photo(0)
    inner_x, inner_y = (409, 512, 921), (256, 512)
    for x0, y0, x1, y1, _ in boxes:
        assert any(x0 < b < x1 for b in inner_x) or any(y0 < b < y1
                                                        for b in inner_y)
        assert max(x1 - x0, y1 - y0) < 0.2 * 512
