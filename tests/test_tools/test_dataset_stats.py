"""tools/analysis/dataset_stats.py: dataset statistics and anchor coverage.

The coverage numbers of the tiny cases are counted by hand from the anchor
geometry (32 px square anchors every 8 px, centred on multiples of 8); the
numbers on the real photos are cross-checked against anchors and IoU
written here from the paper's definition (Sec. 4, "Anchors"), in numpy.
"""
import json
import math
import os.path as osp
import shlex

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.conftest import ROOT
from tools.analysis import dataset_stats as ds

STRIDE8 = dict(
    type='AnchorGenerator',
    octave_base_scale=4,
    scales_per_octave=1,
    ratios=[1.0],
    strides=[8])
ASSIGNER = dict(
    type='MaxIoUAssigner',
    pos_iou_thr=0.5,
    neg_iou_thr=0.4,
    min_pos_iou=0,
    ignore_iof_thr=-1)
# One 64x64 input: A = 32 px (IoU 1 with the anchor at (16, 16), 0.6 with
# its 4 neighbours, 0.39 or less with the others); B = 8 px inside 16
# anchors, all at IoU 64/1024 (low-quality matches only); C = 24 px, IoU
# 576/1024 with the anchor at (16, 48), 0.43 with its neighbours; D = one
# pixel inside 6 anchors at IoU 1/1024.
BOXES = np.array([[0, 0, 32, 32], [40, 40, 48, 48], [4, 36, 28, 60],
                  [60, 4, 61, 5]], np.float64)
HAND = dict(best=[1.0, 64 / 1024, 576 / 1024, 1 / 1024], num_pos=[5, 16, 1, 6])


def write_dataset(root, images) -> str:
    """A COCO json of ``[(w, h, [[x1, y1, x2, y2, iscrowd], ...]), ...]``."""
    coco = dict(
        images=[], annotations=[], categories=[dict(id=1, name='thing')])
    for i, (w, h, boxes) in enumerate(images, start=1):
        coco['images'].append(
            dict(id=i, file_name=f'{i}.jpg', width=w, height=h))
        for x1, y1, x2, y2, crowd in boxes:
            coco['annotations'].append(
                dict(
                    id=len(coco['annotations']) + 1,
                    image_id=i,
                    category_id=1,
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1),
                    iscrowd=crowd))
    path = osp.join(str(root), 'ann.json')
    with open(path, 'w') as f:
        json.dump(coco, f)
    return path


def write_config(root, anchor_generator, resize=None) -> str:
    resize = resize or dict(type='Resize', scale=(64, 64), keep_ratio=True)
    cfg = Config(
        dict(
            model=dict(
                data_preprocessor=dict(pad_size_divisor=32),
                bbox_head=dict(anchor_generator=anchor_generator),
                train_cfg=dict(assigner=ASSIGNER)),
            train_dataloader=dict(
                dataset=dict(
                    type='CocoDataset',
                    data_root=str(root),
                    ann_file='ann.json',
                    pipeline=[dict(type='LoadImageFromFile'), resize]))))
    path = osp.join(str(root), 'tiny_cfg.py')
    cfg.dump(path)
    return path


def test_counter_hand_count():
    counter = ds.CoverageCounter(STRIDE8, ASSIGNER, 32)
    assert counter.anchors(64, 64).shape == (64, 4)  # an 8 x 8 grid
    best, num_pos = counter.image(64, 64, BOXES, np.zeros((0, 4)))
    np.testing.assert_allclose(best, HAND['best'], rtol=1e-6)
    assert num_pos.tolist() == HAND['num_pos']


def test_counter_ignored_anchors():
    """A crowd box [0, 0, 20, 64] with ignore_iof_thr=0.5 ignores the
    anchors with more than half their area inside it: of A's five
    positives those at (16, 16), (8, 16) and (16, 24) (IoF 0.625); (24, 16)
    (IoF 0.375) and (16, 8) (0.625 x 0.75) stay, both at IoU 0.6."""
    counter = ds.CoverageCounter(STRIDE8, dict(ASSIGNER, ignore_iof_thr=0.5),
                                 32)
    best, num_pos = counter.image(64, 64, BOXES[:1],
                                  np.array([[0, 0, 20, 64]], np.float64))
    np.testing.assert_allclose(best, [0.6], rtol=1e-6)
    assert num_pos.tolist() == [2]


def test_counter_featmaps_match_the_model():
    """The anchors of an odd-sized input lie on the feature maps the demo
    model really produces (padded to 32, then ceil(pad / stride))."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/demo/'
                 'retina_r18_fpn_shapes.py'))
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 96, 128))  # 100 x 70
    cells = sum(f.shape[-2] * f.shape[-1] for f in feats)
    counter = ds.CoverageCounter(cfg.model.bbox_head.anchor_generator,
                                 cfg.model.train_cfg.assigner, 32)
    assert counter.anchors(100, 70).shape == (cells * 9, 4)


def test_resize_matches_mmdet_resize():
    from mmdet.datasets.transforms import Resize
    from mmdet.structures.bbox import HorizontalBoxes
    boxes = np.array([[3.0, 4.0, 90.0, 49.0], [10.0, 0.0, 100.0, 20.0]])
    img = ds.ImageBoxes(100, 50, boxes, np.zeros(2, np.int64), np.zeros(
        (0, 4)))
    for scale, keep in (((64, 64), True), ((1333, 800), True), ((30, 40),
                                                                False)):
        out = Resize(
            scale=scale, keep_ratio=keep).transform(
                dict(
                    img=np.zeros((50, 100, 3), np.uint8),
                    gt_bboxes=HorizontalBoxes(torch.tensor(boxes).float())))
        w, h, got, _ = ds.resize(img, scale, keep)
        assert (h, w) == out['img_shape']
        np.testing.assert_allclose(got, out['gt_bboxes'].numpy(), rtol=1e-5)


def test_main_hand_count(tmp_path):
    """The tool end to end: 128 px images resized to 64 (boxes halved),
    one image without objects, one crowd box (ignored, not counted)."""
    ann = write_dataset(tmp_path, [
        (128, 128, [[*(b * 2), 0] for b in BOXES]),
        (128, 128, []),
        (128, 128, [[0, 0, 40, 40, 1]]),
    ])
    cfg = write_config(tmp_path, STRIDE8)
    out = ds.main([cfg, '--out-dir', str(tmp_path / 'out'), '--no-suggest'])
    stats, cov = out['stats'], out['coverage']
    assert out['ann_file'] == ann
    assert (stats['images'], stats['images_without_objects'], stats['objects'],
            stats['ignored_objects']) == (3, 2, 4, 1)
    assert stats['objects_per_image'] == dict(mean=4 / 3, median=0.0, max=4)
    assert cov['objects'] == 4
    assert cov['covered'] == 0.5  # A and C
    assert cov['assigned'] == 1.0  # B and D by low-quality matches
    assert cov['low_quality_only'] == 0.5
    assert cov['pos_per_object_mean'] == 7.0  # (5 + 16 + 1 + 6) / 4
    assert cov['pos_per_object_median'] == 5.5
    hist = {k: v for k, v in cov['pos_per_object_hist'].items() if v}
    assert hist == {'1': 1, '5-9': 2, '10-19': 1}
    # input sizes: A 32, B 8, C 24, D 1 px
    assert cov['by_size'] == {
        '0-16': dict(objects=2, covered=0.0),
        '16-32': dict(objects=1, covered=1.0),
        '32-64': dict(objects=1, covered=1.0)
    }
    png = tmp_path / 'out' / 'dataset_stats.png'
    assert png.stat().st_size > 10000
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(tmp_path / 'out' / 'dataset_stats.json') as f:
        assert json.load(f)['coverage'] == cov


def test_random_choice_resize(tmp_path):
    """Each object is counted once at each scale of a RandomChoiceResize:
    at 64 px A and C are covered (as above); at 128 px (no resize) A, B, C
    and D are 64, 16, 48 and 2 px, and the best 32 px anchor reaches IoU
    1024/4096, 256/1024, 1024/2304 and 4/1024: none covered."""
    write_dataset(tmp_path, [(128, 128, [[*(b * 2), 0] for b in BOXES])])
    cfg = write_config(
        tmp_path, STRIDE8,
        dict(
            type='RandomChoiceResize',
            scales=[(64, 64), (128, 128)],
            keep_ratio=True))
    cov = ds.main([cfg, '--out-dir',
                   str(tmp_path), '--no-suggest'])['coverage']
    assert (cov['objects'], cov['scales'], cov['covered']) == (4, 2, 0.25)


def test_suggestion_applies(tmp_path, capsys):
    """16 px objects centred on the stride-8 grid: the 32 px anchors reach
    IoU 0.25, 16 px anchors (octave_base_scale 2) IoU 1, 12 px (1.5) IoU
    0.56: both cover all; 2 is the smaller change. The printed
    --cfg-options, given back to the tool, give the coverage it promised."""
    boxes = [[c - 8, c - 8, c + 8, c + 8, 0] for c in (16, 40)]
    write_dataset(tmp_path, [(64, 64, boxes)])
    gen = dict(STRIDE8, strides=[8, 16])
    cfg = write_config(tmp_path, gen)
    out = ds.main([cfg, '--out-dir', str(tmp_path / 'out')])
    assert out['coverage']['covered'] == 0.0
    sug = out['suggestion']
    assert (sug['octave_base_scale'], sug['ratios'],
            sug['input_factor']) == (2, [1.0], 1.0)
    assert sug['coverage']['covered'] == 1.0
    line = ('--cfg-options '
            'model.bbox_head.anchor_generator.octave_base_scale=2')
    assert sug['cfg_options'] == line
    assert line in capsys.readouterr().out
    again = ds.main(
        [cfg, '--out-dir', str(tmp_path / 'again')] + shlex.split(line))
    assert again['coverage'] == sug['coverage']
    assert again['suggestion'] is None  # at the target already


def test_input_scale_suggestion_applies(tmp_path):
    """Objects too small for any anchor shape at this input: the search
    goes on to a larger input; its cfg-options (pipeline indices) work."""
    boxes = [[c - 2, c - 2, c + 2, c + 2, 0] for c in (16, 40)]
    write_dataset(tmp_path, [(64, 64, boxes)])
    cfg = write_config(tmp_path, STRIDE8)
    sug = ds.main([cfg, '--out-dir', str(tmp_path / 'o')])['suggestion']
    assert sug['input_factor'] in ds.SCALE_FACTORS
    assert 'train_dataloader.dataset.pipeline.1.scale=' in sug['cfg_options']
    opts = shlex.split(sug['cfg_options'])
    again = ds.main([cfg, '--out-dir',
                     str(tmp_path / 'a'), '--no-suggest'] + opts)
    assert again['coverage'] == sug['coverage']


def test_bad_annotation_file(tmp_path, capsys):
    cfg = write_config(tmp_path, STRIDE8)
    with pytest.raises(SystemExit) as exc:
        ds.main([cfg, '--ann-file', str(tmp_path / 'nope.json')])
    assert exc.value.code == 2
    assert 'nope.json' in capsys.readouterr().err


def paper_anchors(w: int, h: int, gen: dict) -> np.ndarray:
    """Anchors from the paper's definition: at level l (stride s), boxes of
    area (s * octave_base_scale * 2^(k/3))^2 and aspect h/w = r, centred on
    every multiple of s of the input padded to 32."""
    pw, ph = math.ceil(w / 32) * 32, math.ceil(h / 32) * 32
    out = []
    for s in gen['strides']:
        ys, xs = np.meshgrid(
            np.arange(math.ceil(ph / s)) * s,
            np.arange(math.ceil(pw / s)) * s,
            indexing='ij')
        for r in gen['ratios']:
            for k in range(gen['scales_per_octave']):
                size = s * gen['octave_base_scale'] * 2**(
                    k / gen['scales_per_octave'])
                aw, ah = size / math.sqrt(r), size * math.sqrt(r)
                out.append(
                    np.stack(
                        [xs - aw / 2, ys - ah / 2, xs + aw / 2, ys + ah / 2],
                        -1).reshape(-1, 4))
    return np.concatenate(out)


def numpy_best_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, None, :2], anchors[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], anchors[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(boxes)[:, None] + area(anchors)[None] - inter)
    return iou.max(1)


@pytest.mark.parametrize(
    'config',
    ['configs/demo/retina_r18_fpn_shapes.py', 'configs/retina_r50_fpn_1x.py'])
def test_voc100_coverage(voc100, config, tmp_path):
    """The coverage of the demo and the paper's R-50 config on the real
    photos (quoted in the README), checked against the numpy count."""
    out = ds.main([
        osp.join(ROOT, config), '--ann-file',
        osp.join(voc100, 'annotations.json'), '--out-dir',
        str(tmp_path), '--no-suggest'
    ])
    cov = out['coverage']
    print(f'\n{config}: covered {cov["covered"]:.1%}, assigned '
          f'{cov["assigned"]:.1%}, positives per object mean '
          f'{cov["pos_per_object_mean"]:.1f} median '
          f'{cov["pos_per_object_median"]:g}, by size {cov["by_size"]}')
    assert out['stats']['objects'] == cov['objects'] == 273
    cfg = Config.fromfile(osp.join(ROOT, config))
    gen = cfg.model.bbox_head.anchor_generator
    scale = cfg.train_dataloader.dataset.pipeline[2].scale
    with open(osp.join(voc100, 'annotations.json')) as f:
        coco = json.load(f)
    covered = 0
    for img in coco['images']:
        anns = [
            a['bbox'] for a in coco['annotations']
            if a['image_id'] == img['id']
        ]
        # keep-ratio resize (mmcv's rounding), boxes scaled and clipped
        f = min(
            max(scale) / max(img['width'], img['height']),
            min(scale) / min(img['width'], img['height']))
        w = int(img['width'] * f + 0.5)
        h = int(img['height'] * f + 0.5)
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in anns])
        boxes *= [w / img['width'], h / img['height']] * 2
        boxes = np.clip(boxes, 0, [w, h, w, h])
        best = numpy_best_iou(boxes, paper_anchors(w, h, gen))
        covered += int((best >= 0.5 - 1e-6).sum())
    assert cov['covered'] == pytest.approx(covered / 273)
    assert cov['covered'] <= cov['assigned'] <= 1.0
