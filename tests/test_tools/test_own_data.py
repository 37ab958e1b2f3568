"""The README's own-data path, end to end, with the real tools as
subprocesses on the generated example: CSV and VOC → COCO → anchor check →
train a few iterations → evaluate → tiled detection on a large photo, and
fine-tuning from a checkpoint with another number of classes (loaded except
the classifier, or refused with a report). CPU only (no GPU visible)."""
import csv
import json
import os.path as osp
import re
import textwrap

import pytest

from tests.test_tools.test_cli import run_tool

pytestmark = pytest.mark.slow
CLASSES = ('circle', 'cross', 'square', 'triangle')  # the json's order


def child_config(path, data_root, classes=CLASSES, extra=''):
    """The README's 'my dataset' config, inheriting the recipe."""
    path.write_text(
        textwrap.dedent(f"""\
        _base_ = {osp.join(osp.dirname(osp.dirname(osp.dirname(
            osp.abspath(__file__)))), 'configs', 'own_data',
            'retina_r18_fpn_own_data.py')!r}
        classes = {tuple(classes)!r}
        data_root = {data_root + '/'!r}
        model = dict(bbox_head=dict(num_classes=len(classes)))
        train_dataloader = dict(dataset=dict(
            data_root=data_root, metainfo=dict(classes=classes)))
        val_dataloader = dict(dataset=dict(
            data_root=data_root, metainfo=dict(classes=classes)))
        test_dataloader = val_dataloader
        val_evaluator = dict(ann_file=data_root + 'annotations/ann_val.json')
        test_evaluator = val_evaluator
        """) + extra)
    return str(path)


FAST = [
    'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
    'test_dataloader.num_workers=0',
    'test_dataloader.persistent_workers=False',
    'default_hooks.logger.interval=1'
]


@pytest.fixture(scope='module')
def own_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('own') / 'mine')
    run_tool('tools/make_own_data_example.py', root, '--num', '10')
    return root


def test_csv_and_voc_give_the_same_coco(own_data):
    run_tool('tools/dataset_converters/csv2coco.py', f'{own_data}/boxes.csv',
             '--img-root', f'{own_data}/images', '--out',
             f'{own_data}/annotations/ann.json', '--split', '0.8')
    run_tool('tools/dataset_converters/voc2coco.py', f'{own_data}/Annotations',
             '--img-root', f'{own_data}/images', '--classes',
             ','.join(CLASSES), '--out', f'{own_data}/voc/ann.json')
    train = json.load(open(f'{own_data}/annotations/ann_train.json'))
    val = json.load(open(f'{own_data}/annotations/ann_val.json'))
    voc = json.load(open(f'{own_data}/voc/ann.json'))
    assert len(train['images']) == 8 and len(val['images']) == 2
    with open(f'{own_data}/boxes.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(train['annotations']) + len(val['annotations']) == len(rows)

    def boxes(coco):
        names = {c['id']: c['name'] for c in coco['categories']}
        files = {i['id']: i['file_name'] for i in coco['images']}
        return sorted(
            (osp.basename(files[a['image_id']]), names[a['category_id']],
             *[round(v, 3) for v in a['bbox']]) for a in coco['annotations'])

    # The CSV's corners are COCO's continuous ones: w = xmax - xmin.
    expected = sorted((r['image_path'], r['label'], float(r['xmin']),
                       float(r['ymin']), float(r['xmax']) - float(r['xmin']),
                       float(r['ymax']) - float(r['ymin'])) for r in rows)
    assert sorted(boxes(train) + boxes(val)) == expected
    # VOC's 1-based inclusive corners (xmin + 1 .. xmax) read as mmdet's
    # VOC reader does (1 subtracted from every corner) give the same boxes
    # one pixel narrower and lower: the converters agree box for box.
    assert boxes(voc) == sorted(
        (f, lab, x, y, w - 1, h - 1) for f, lab, x, y, w, h in expected)


@pytest.fixture(scope='module')
def trained(own_data, tmp_path_factory):
    """The recipe trained 4 iterations on the converted example."""
    if not osp.isfile(f'{own_data}/annotations/ann_train.json'):
        test_csv_and_voc_give_the_same_coco(own_data)
    tmp = tmp_path_factory.mktemp('run')
    cfg = child_config(tmp / 'mine.py', own_data)
    work = str(tmp / 'work')
    out = run_tool('tools/train.py', cfg, '--work-dir', work, '--cfg-options',
                   'train_cfg.max_iters=4', *FAST)
    assert 'Saving checkpoint at 4 iterations' in out
    return cfg, work, osp.join(work, 'iter_4.pth')


def test_anchor_check_on_own_data(own_data, trained):
    cfg = trained[0]
    out = run_tool('tools/analysis/dataset_stats.py', cfg, '--out-dir',
                   osp.join(trained[1], 'stats'))
    assert re.search(r'covered', out)
    stats = json.load(
        open(osp.join(trained[1], 'stats', 'dataset_stats.json')))
    assert stats  # the numbers the README quotes come from this file


def test_evaluate_reports_ap(trained):
    cfg, work, ckpt = trained
    # An untrained model scores below 0.05: the metric reports AP 0 with
    # a warning rather than an ERROR and no metrics.
    out = run_tool('tools/test.py', cfg, ckpt, '--work-dir', work,
                   '--cfg-options', *FAST)
    assert re.search(r'coco/bbox_mAP: \d', out), out[-3000:]


def test_tiled_detection_on_a_large_photo(own_data, trained, tmp_path):
    cfg, _, ckpt = trained
    out = run_tool('tools/infer.py', cfg, ckpt, f'{own_data}/large/large.jpg',
                   '--tile', '512', '--overlap', '0.2', '--score-thr', '0',
                   '--out-dir', str(tmp_path), '--cfg-options',
                   'model.test_cfg.score_thr=0',
                   'model.test_cfg.max_per_img=5')
    assert 'large.jpg:' in out
    dets = json.load(open(tmp_path / 'detections.json'))
    # 6 windows of at most 5 boxes, merged: boxes in image pixels.
    assert 0 < len(dets) <= 30
    for d in dets:
        x1, y1, x2, y2 = d['bbox']
        assert 0 <= x1 <= x2 <= 1024 and 0 <= y1 <= y2 <= 768
    assert (tmp_path / 'vis' / 'large.jpg').is_file()


def test_fine_tune_on_other_classes_skips_only_the_classifier(
        own_data, trained, tmp_path):
    """4-class checkpoint → 2-class model: everything loads except
    retina_cls, whose skipped keys are logged with their shapes."""
    cfg2 = child_config(tmp_path / 'two.py', own_data, ('circle', 'square'))
    out = run_tool('tools/train.py', cfg2, '--work-dir',
                   str(tmp_path / 'work'), '--cfg-options',
                   f'load_from={trained[2]}', 'train_cfg.max_iters=1', *FAST)
    # 9 anchors x 4 classes = 36 outputs in the checkpoint, 18 now.
    assert 'bbox_head.retina_cls.weight (36, 128, 3, 3)->(18, 128, 3, 3)' \
        in out, out[-3000:]
    assert 'bbox_head.retina_cls.bias (36,)->(18,)' in out
    assert 'backbone' not in out.split('keep their initialisation:')[1] \
        .split('\n')[0]


def test_mismatch_without_opt_in_is_refused(own_data, trained, tmp_path):
    """The demo config does not allow a classifier mismatch: train.py stops
    before training with the report, exit status 2, no traceback."""
    cfg2 = child_config(
        tmp_path / 'two.py',
        own_data, ('circle', 'square'),
        extra="custom_hooks = [dict(type='CheckpointCompatibilityHook')]\n")
    out = run_tool(
        'tools/train.py',
        cfg2,
        '--work-dir',
        str(tmp_path / 'work'),
        '--cfg-options',
        f'load_from={trained[2]}',
        'train_cfg.max_iters=1',
        *FAST,
        expect_rc=2)
    assert 'the checkpoint does not fit the model' in out
    assert 'bbox_head.retina_cls.weight: checkpoint (36, 128, 3, 3), ' \
        'model (18, 128, 3, 3)' in out
    assert "allow_mismatch=['bbox_head.retina_cls']" in out
    assert 'Traceback' not in out
