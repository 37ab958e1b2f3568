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


# ---- scores of absorbed boxes ---------------------------------------------
# Issue 19, item 4: a cut box dropped for a whole view of the object from
# another window used to leave the whole view at its own score, however
# much more confident the cut view was.


def window_sample(boxes) -> DetDataSample:
    """A window's prediction from ``(x1, y1, x2, y2, label, score)`` in
    window pixels."""
    inst = InstanceData()
    inst.bboxes = torch.tensor([b[:4] for b in boxes],
                               dtype=torch.float32).reshape(-1, 4)
    inst.labels = torch.tensor([b[4] for b in boxes], dtype=torch.long)
    inst.scores = torch.tensor([b[5] for b in boxes], dtype=torch.float32)
    sample = DetDataSample()
    sample.pred_instances = inst
    return sample


def boxes_and_scores(inst) -> list:
    """``(x1, y1, x2, y2, label, score)`` rows, sorted by box."""
    return sorted(
        tuple(round(v) for v in b.tolist()) + (int(lab), round(float(s), 4))
        for b, lab, s in zip(inst.bboxes, inst.labels, inst.scores))


def edge_scored_detector(cut_score: float, whole_score: float):
    """The component detector, scoring a component that touches the crop's
    border (a truncated view here: no test object touches the image
    border) ``cut_score`` and any other ``whole_score``."""

    def detect(crop: np.ndarray) -> DetDataSample:
        sample = component_detector(crop)
        b = sample.pred_instances.bboxes
        h, w = crop.shape[:2]
        touches = (b[:, 0] <= 0) | (b[:, 1] <= 0) | (b[:, 2] >= w) | (
            b[:, 3] >= h)
        sample.pred_instances.scores = torch.where(touches,
                                                   torch.tensor(cut_score),
                                                   torch.tensor(whole_score))
        return sample

    return detect


@pytest.mark.parametrize('cut_score,whole_score', [(0.9, 0.3), (0.3, 0.9),
                                                   (0.6, 0.6)])
def test_kept_box_has_the_best_score_of_the_views(cut_score, whole_score):
    """The issue's case: an object cut by x = 512 (windows 0 and 2 see a
    half, window 1 sees it whole). Whichever view is the confident one,
    one box comes out, whole, at max(cut, whole), so a 0.5 threshold keeps
    it."""
    img = painted(300, 1024, [(462, 100, 562, 200, 0)])
    detect = edge_scored_detector(cut_score, whole_score)
    out = detect_tiled(detect, img, 512, 0.2).pred_instances
    best = max(cut_score, whole_score)
    assert boxes_and_scores(out) == [(462, 100, 562, 200, 0, best)]
    assert out.scores.dtype == torch.float32
    assert len(out[out.scores >= 0.5]) == 1


def test_score_passes_along_a_chain_of_absorbed_boxes():
    """A small cut view absorbed by a larger cut view that is absorbed in
    turn by the whole view: the score travels to the box that is kept.

    Windows x 0-500, 420-920, 450-950 (image 300 × 950); object x 400-480,
    y 100-200. Window 0 sees it whole (score 0.2), window 1 cut at its left
    edge as x 420-480 (0.4), window 2 as x 450-480 (0.95). By hand: the
    30 px piece lies wholly in the 60 px piece (IoU 0.5) and in the whole
    box (IoU 0.375): absorbed by the 60 px piece, which then scores 0.95;
    the 60 px piece lies wholly in the whole box: absorbed, 0.95 with it.
    (Window 1's piece comes first in the list, so taking the boxes in list
    order would lose the 0.95.)
    """
    wins = [(0, 0, 500, 300), (420, 0, 920, 300), (450, 0, 950, 300)]
    samples = [
        window_sample([(400, 100, 480, 200, 0, 0.2)]),
        window_sample([(0, 100, 60, 200, 0, 0.4)]),
        window_sample([(0, 100, 30, 200, 0, 0.95)]),
    ]
    out = merge_tiles(samples, wins, (300, 950)).pred_instances
    assert boxes_and_scores(out) == [(400, 100, 480, 200, 0, 0.95)]
    # The windows' own predictions are left as they were.
    assert [round(float(s.pred_instances.scores[0]), 4)
            for s in samples] == [0.2, 0.4, 0.95]


def test_score_goes_to_the_view_of_the_same_object_only():
    """A cut piece inside both the whole view of its object and a larger
    cut box of the same class (a piece of another object around it)
    passes its score to the whole view (IoU 0.5), not to the other
    object's piece (IoU 0.04), whose own whole view would inherit it.

    Windows x 0-500 and 420-920 (image 300 × 920). Object C, x 400-440,
    y 100-140: window 0 sees it whole (0.3), window 1 sees x 420-440 (cut
    at its left edge, 0.9, 800 px²). Large object D, x 423-700, y 60-280:
    window 1 sees it whole (0.1), window 0 cut at its right edge as x
    423-500 (0.05, 16940 px²). C's piece lies wholly in C (IoU 800 / 1600)
    and 17 × 40 = 680 px² of it in D's piece (0.85 ≥ 0.8; IoU 680 / 17060).
    D's piece lies wholly in D: absorbed, D keeps max(0.1, 0.05). NMS: C
    and D overlap by 680 px² (IoU 0.011), both stay.
    """
    wins = [(0, 0, 500, 300), (420, 0, 920, 300)]
    samples = [
        window_sample([(400, 100, 440, 140, 0, 0.3),
                       (423, 60, 500, 280, 0, 0.05)]),
        window_sample([(0, 100, 20, 140, 0, 0.9), (3, 60, 280, 280, 0, 0.1)]),
    ]
    out = merge_tiles(samples, wins, (300, 920)).pred_instances
    assert boxes_and_scores(out) == [(400, 100, 440, 140, 0, 0.9),
                                     (423, 60, 700, 280, 0, 0.1)]


def test_pieces_of_a_large_object_keep_the_best_scores():
    """An object wider than the overlap (x 300-700, y 50-150; windows x
    0-512, 409-921, 512-1024) is seen whole nowhere. Window 2's piece (x
    512-700, 0.8) lies wholly in window 1's larger piece (x 409-700, 0.3):
    absorbed, window 1's piece scores 0.8. Window 0's piece (x 300-512,
    0.6) shares 103 of its 212 px width with window 1's (0.49 < 0.8): kept
    at 0.6; IoU 10300 / 40000 = 0.26, NMS keeps both."""
    wins = tile_windows(200, 1024, 512, 0.2)
    assert wins == [(0, 0, 512, 200), (409, 0, 921, 200), (512, 0, 1024, 200)]
    samples = [
        window_sample([(300, 50, 512, 150, 0, 0.6)]),
        window_sample([(0, 50, 291, 150, 0, 0.3)]),
        window_sample([(0, 50, 188, 150, 0, 0.8)]),
    ]
    out = merge_tiles(samples, wins, (200, 1024)).pred_instances
    assert boxes_and_scores(out) == [(300, 50, 512, 150, 0, 0.6),
                                     (409, 50, 700, 150, 0, 0.8)]


def test_other_class_neither_gives_nor_takes_a_score():
    """A confident cut box of class 1 inside a whole box of class 0: both
    stay, each with its own score."""
    wins = tile_windows(300, 1024, 512, 0.2)
    samples = [
        window_sample([(462, 100, 512, 200, 1, 0.9)]),
        window_sample([(53, 100, 153, 200, 0, 0.3)]),
        window_sample([]),
    ]
    out = merge_tiles(samples, wins, (300, 1024)).pred_instances
    assert boxes_and_scores(out) == [(462, 100, 512, 200, 1, 0.9),
                                     (462, 100, 562, 200, 0, 0.3)]
