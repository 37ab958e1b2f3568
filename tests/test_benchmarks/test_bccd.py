"""benchmarks/bccd.py reruns the BCCD table of docs/own_data.md.

Without training (a run costs 4 x 6 minutes): the table's configs exist
and hold the stated settings, every command the script runs starts (the
tools' own argparse, the configs load), the page lists exactly those
commands, and the figures are read from the runs' own files (mmdet's
``scalars.json`` record, the last checkpoint's name).
"""
import importlib.util
import json
import os.path as osp
import re

import pytest
from mmengine.config import Config

from projects.focal_retina.utils.commands import check_command
from tests.conftest import ROOT


def load_benchmark():
    path = osp.join(ROOT, 'benchmarks', 'bccd.py')
    spec = importlib.util.spec_from_file_location('bccd_bench', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bccd = load_benchmark()


def bccd_section() -> str:
    with open(osp.join(ROOT, 'docs', 'own_data.md'), encoding='utf-8') as f:
        text = f.read()
    start = text.index('## Measured: BCCD')
    end = text.find('\n## ', start + 1)
    return text[start:end if end > 0 else None]


def test_every_command_starts():
    """The converter, the shapes data and checkpoint, the four rows: each
    parses with its tool's argparse and names a config that loads."""
    steps = bccd.plan(bccd.parse_args([]))
    assert [s.name for s in steps] == [
        'convert trainval', 'convert test', 'shapes data', 'shapes checkpoint',
        'scratch', 'photo', 'overhead', 'finetuned'
    ]
    for step in steps:
        assert check_command(step.shell(), ROOT) == [], step.shell()


def test_the_page_lists_the_commands_it_runs():
    """The page's BCCD section gives the one command and each command it
    runs, as it runs them (a user can run them by hand)."""
    section = re.sub(r'\s*\\\n\s*', ' ', bccd_section())
    assert 'python benchmarks/bccd.py' in section
    for step in bccd.plan(bccd.parse_args([])):
        assert step.shell() in section, step.shell()


def test_configs_hold_the_table_settings():
    """BCCD's classes and splits on the own-data recipe; the presets on
    the training pipeline only; the fine-tuned row loads the checkpoint
    the shapes step writes; one evaluation, at the end."""
    configs = {
        row: Config.fromfile(osp.join(ROOT, path))
        for row, (path, _) in bccd.ROWS.items()
    }
    recipe = Config.fromfile(
        osp.join(ROOT, 'configs/own_data/retina_r18_fpn_own_data.py'))
    for row, cfg in configs.items():
        assert cfg.model.bbox_head.num_classes == 3
        assert cfg.model.backbone.depth == recipe.model.backbone.depth == 18
        for split, ann in (('train', 'trainval'), ('val', 'test'), ('test',
                                                                    'test')):
            dataset = cfg[f'{split}_dataloader'].dataset
            assert dataset.metainfo.classes == ('RBC', 'WBC', 'Platelets')
            assert osp.join(dataset.data_root, dataset.ann_file) == \
                f'data/bccd_coco/{ann}.json'
            assert osp.join(dataset.data_root, dataset.data_prefix.img) == \
                'data/bccd/JPEGImages/'
        assert cfg.val_evaluator.ann_file == 'data/bccd_coco/test.json'
        assert cfg.train_cfg.val_interval > cfg.train_cfg.max_iters == 300
        assert cfg.test_dataloader.dataset.pipeline == \
            recipe.test_dataloader.dataset.pipeline
        assert cfg.load_from == (
            bccd.DEFAULT_SHAPES if row == 'finetuned' else None)
    pipelines = {
        row: [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
        for row, cfg in configs.items()
    }
    assert pipelines['scratch'] == pipelines['finetuned'] == [
        t['type'] for t in recipe.train_dataloader.dataset.pipeline
    ]
    assert 'RandomCrop' in pipelines['photo']
    assert 'RandomRot90' not in pipelines['photo']
    assert 'RandomRot90' in pipelines['overhead']
    shapes = [
        s for s in bccd.plan(bccd.parse_args([]))
        if s.name == 'shapes checkpoint'
    ][0]
    assert 'train_cfg.max_iters=60' in shapes.argv
    assert bccd.DEFAULT_SHAPES == (
        shapes.argv[shapes.argv.index('--work-dir') + 1] + '/iter_60.pth')


def test_other_places_and_lengths_reach_the_commands():
    args = bccd.parse_args([
        '--bccd', '/data/BCCD', '--work-root', 'out', '--shapes-iters', '5',
        '--rows', 'finetuned', '--time-budget', '90', '--threads', '2'
    ])
    shells = [s.shell() for s in bccd.plan(args)]
    assert '--ids /data/BCCD/ImageSets/Main/test.txt' in shells[1]
    assert shells[-1] == (
        'OMP_NUM_THREADS=2 python tools/train.py '
        'configs/examples/bccd/retina_r18_fpn_bccd_ft.py --work-dir '
        'out/finetuned --time-budget 90 --cfg-options '
        'load_from=out/shapes/iter_5.pth')
    assert len(bccd.plan(bccd.parse_args(['--rows', 'scratch']))) == 3


@pytest.mark.parametrize('argv,message', [
    (['--jobs', '0'], '--jobs must be >= 1'),
    (['--time-budget', '-1'], '--time-budget must be > 0'),
    (['--rows', 'imagenet'], "invalid choice: 'imagenet'"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bccd.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_figures_come_from_the_run_files(tmp_path):
    """The row's AP figures are the last COCO record of mmdet's
    scalars.json (per class: CocoMetric's classwise keys), its iterations
    those of the last checkpoint."""
    run = tmp_path / '20261206_120000' / 'vis_data'
    run.mkdir(parents=True)
    records = [
        {
            'loss': 1.0,
            'iter': 10
        },
        {
            'coco/bbox_mAP': 0.1,
            'coco/bbox_mAP_50': 0.2,
            'coco/bbox_mAP_75': 0.05,
            'step': 100
        },
        {
            'coco/bbox_mAP': 0.25,
            'coco/bbox_mAP_50': 0.6,
            'coco/bbox_mAP_75': 0.2,
            'coco/RBC_precision': 0.2,
            'coco/WBC_precision': 0.45,
            'coco/Platelets_precision': 0.1,
            'step': 148
        },
    ]
    (run / 'scalars.json').write_text('\n'.join(map(json.dumps, records)))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_148.pth'))
    metrics = bccd.last_metrics(str(tmp_path))
    assert metrics == {
        'AP': 0.25,
        'AP50': 0.6,
        'AP75': 0.2,
        'AP RBC': 0.2,
        'AP WBC': 0.45,
        'AP Platelets': 0.1
    }
    assert bccd.last_iteration(str(tmp_path)) == 148
    assert bccd.last_metrics(str(tmp_path / 'none')) is None
    table = bccd.table({
        'scratch':
        dict(
            description='from scratch, the recipe',
            config=bccd.ROWS['scratch'][0],
            iterations=148,
            metrics=metrics)
    })
    assert table.splitlines()[-1] == (
        '| from scratch, the recipe | `retina_r18_fpn_bccd.py` | 148 | '
        '0.250 | 0.600 | 0.200 | 0.450 | 0.100 |')


def test_classwise_keys_are_mmdets(tmp_path):
    """mmdet's CocoMetric names each class's AP 'coco/<class>_precision'
    (the key last_metrics reads), on a tiny file of the three classes:
    two found exactly, the third missed."""
    import numpy as np
    from mmdet.evaluation import CocoMetric
    ann = tmp_path / 'ann.json'
    ann.write_text(
        json.dumps(
            dict(
                images=[dict(id=1, width=64, height=64, file_name='1.jpg')],
                annotations=[
                    dict(
                        id=i + 1,
                        image_id=1,
                        category_id=i + 1,
                        bbox=[10 * i, 10 * i, 8, 8],
                        area=64,
                        iscrowd=0) for i in range(3)
                ],
                categories=[
                    dict(id=i + 1, name=n) for i, n in enumerate(bccd.CLASSES)
                ])))
    metric = CocoMetric(ann_file=str(ann), classwise=True)
    metric.dataset_meta = dict(classes=bccd.CLASSES)
    pred = dict(
        img_id=1,
        bboxes=np.array([[0., 0., 8., 8.], [10., 10., 18., 18.]]),
        scores=np.array([0.9, 0.8]),
        labels=np.array([0, 1]))
    results = metric.compute_metrics([(dict(img_id=1), pred)])
    # the evaluator then prefixes them with the metric's prefix
    assert metric.prefix == 'coco'
    assert results['RBC_precision'] == results['WBC_precision'] == 1.0
    assert results['Platelets_precision'] == 0.0  # not detected
