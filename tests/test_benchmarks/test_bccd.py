"""benchmarks/bccd.py reruns the BCCD table of docs/own_data.md.

Without training (a run costs 4 x 20 minutes): the table's configs exist
and hold the stated settings, every command the script runs starts (the
tools' own argparse, the configs load), the page lists exactly those
commands, and the figures are read from the runs' own files (mmdet's
``scalars.json`` record, the last checkpoint's name).
"""
import importlib.util
import json
import os.path as osp
import re
import shlex

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
        'scratch', 'overhead', 'finetuned', 'finetuned_overhead'
    ]
    for step in steps:
        assert check_command(step.shell(), ROOT) == [], step.shell()
    # a second seed's run, as the script adds it for a close start
    args = bccd.parse_args([])
    step = bccd.row_step(args, 'overhead', 1)
    assert step.name == 'overhead_seed1'
    assert check_command(step.shell(), ROOT) == []
    assert 'work_dirs/bccd/overhead_seed1' in step.argv
    assert 'randomness.seed=1' in step.argv


def recorded_args():
    """The arguments of the run the page reports (its results file)."""
    meta = json.load(
        open(osp.join(ROOT, 'benchmarks', 'results', 'bccd.json')))['meta']
    argv = meta['command']
    argv = shlex.split(argv) if isinstance(argv, str) else argv
    return bccd.parse_args(argv[argv.index('benchmarks/bccd.py') + 1:])


def test_the_page_lists_the_commands_it_runs():
    """The page's BCCD section gives the one command and each command it
    ran, as it ran them (a user can run them by hand)."""
    section = re.sub(r'\s*\\\n\s*', ' ', bccd_section())
    assert 'python benchmarks/bccd.py' in section
    data = json.load(
        open(osp.join(ROOT, 'benchmarks', 'results', 'bccd.json')))
    for step in bccd.plan(recorded_args()):
        if step.name in bccd.ROWS or step.name.startswith('convert'):
            assert step.shell() in section, step.shell()
    for name, row in data['rows'].items():
        assert row['command'] in section, row['command']


def test_configs_hold_the_table_settings():
    """BCCD's classes and splits on the own-data recipe; the presets on
    the training pipeline only; the fine-tuned row loads the checkpoint
    the shapes step writes; one evaluation, at the end."""
    configs = {
        row: Config.fromfile(osp.join(ROOT, path))
        for row, (path, _, _) in bccd.ROWS.items()
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
        assert cfg.train_cfg.max_iters == 240
        assert cfg.train_cfg.val_interval == 40
        assert cfg.default_hooks.logger.log_metric_by_epoch is False
        assert cfg.test_dataloader.dataset.pipeline == \
            recipe.test_dataloader.dataset.pipeline
        assert cfg.load_from == ('work_dirs/main_job/iter_500.pth'
                                 if bccd.ROWS[row][2] else None)
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
    assert pipelines['finetuned_overhead'] == pipelines['overhead']
    args = bccd.parse_args([])
    shapes = [s for s in bccd.plan(args) if s.name == 'shapes checkpoint'][0]
    assert 'train_cfg.max_iters=500' in shapes.argv
    assert bccd.other_classes_checkpoint(args) == (
        shapes.argv[shapes.argv.index('--work-dir') + 1] + '/iter_500.pth')
    # a checkpoint given: no shapes steps, the rows load it
    args = bccd.parse_args(['--checkpoint', 'ck.pth'])
    assert [s.name for s in bccd.plan(args)
            if s.name.startswith('shapes')] == []
    assert 'load_from=ck.pth' in bccd.row_step(args, 'finetuned').argv


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
        'out/finetuned --time-budget 90 --amp auto --cfg-options '
        'randomness.seed=0 load_from=out/shapes/iter_5.pth')
    assert len(bccd.plan(bccd.parse_args(['--rows', 'scratch']))) == 3


@pytest.mark.parametrize('argv,message', [
    (['--jobs', '0'], '--jobs must be >= 1'),
    (['--time-budget', '-1'], '--time-budget must be > 0'),
    (['--rows', 'imagenet'], "invalid choice: 'imagenet'"),
    (['--close', '-0.1'], '--close must be >= 0'),
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
    # as mmengine writes them in an iteration-based loop: training records
    # every log interval, a validation at step 0 (the epoch)
    records = [
        {
            'loss': 1.0,
            'iter': 100,
            'step': 100
        },
        {
            'coco/bbox_mAP': 0.1,
            'coco/bbox_mAP_50': 0.2,
            'coco/bbox_mAP_75': 0.05,
            'step': 0
        },
        {
            'loss': 0.9,
            'iter': 140,
            'step': 140
        },
        {
            'coco/bbox_mAP': 0.25,
            'coco/bbox_mAP_50': 0.6,
            'coco/bbox_mAP_75': 0.2,
            'coco/RBC_precision': 0.2,
            'coco/WBC_precision': 0.45,
            'coco/Platelets_precision': 0.1,
            'step': 0
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
    # the last validation is the last checkpoint's (148), not the last
    # logged iteration's (140)
    assert bccd.val_curve(str(tmp_path)) == [[100, 0.1], [148, 0.25]]
    assert bccd.finished(str(tmp_path))
    # with log_metric_by_epoch=False the step is the iteration
    (run / 'scalars.json').write_text('\n'.join(
        json.dumps(dict(r, step=120) if 'coco/bbox_mAP' in r and r[
            'coco/bbox_mAP'] == 0.1 else r) for r in records))
    assert bccd.val_curve(str(tmp_path))[0] == [120, 0.1]
    assert bccd.last_metrics(str(tmp_path / 'none')) is None
    table = bccd.table({
        'scratch':
        dict(
            description='from scratch, the recipe',
            seed=0,
            iterations=148,
            metrics=metrics,
            curve=[[100, 0.1], [148, 0.25]])
    })
    assert table.splitlines()[-1] == (
        '| from scratch, the recipe | 0 | 148 | 0.250 | 0.250 (148) | 0.600 '
        '| 0.200 | 0.450 | 0.100 |')


def _run(row: str, seed: int, ap: float) -> dict:
    return dict(row=row, seed=seed, metrics={'AP': ap})


@pytest.mark.parametrize('aps,verdict,mean', [
    # (scratch, overhead) per seed
    ([(0.20, 0.25)], 'the overhead preset helps', 0.05),
    ([(0.25, 0.20)], "the recipe's pipeline is better", -0.05),
    ([(0.20, 0.21)], 'undecided', 0.01),  # within --close
    ([(0.20, 0.21), (0.20, 0.26)], 'the overhead preset helps', 0.035),
    ([(0.20, 0.25), (0.25, 0.22)], 'undecided', 0.01),  # signs differ
])
def test_verdicts(aps, verdict, mean):
    """The difference of the two pipelines of a start, seed by seed; a
    verdict only outside --close, and only where the seeds agree."""
    rows = {}
    for seed, (plain, preset) in enumerate(aps):
        rows[bccd.run_name('scratch', seed, 0)] = _run('scratch', seed, plain)
        rows[bccd.run_name('overhead', seed, 0)] = _run(
            'overhead', seed, preset)
    out = bccd.compare(rows, 0, 0.02)
    assert list(out) == ['from scratch']
    assert out['from scratch']['verdict'] == verdict
    assert out['from scratch']['mean_difference'] == pytest.approx(mean)
    assert out['from scratch']['seeds'] == list(range(len(aps)))


def test_a_close_start_runs_a_second_seed():
    args = bccd.parse_args([])
    rows = {
        'scratch': _run('scratch', 0, 0.200),
        'overhead': _run('overhead', 0, 0.215),
        'finetuned': _run('finetuned', 0, 0.30),
        'finetuned_overhead': _run('finetuned_overhead', 0, 0.25),
    }
    assert bccd.close_starts(rows, args) == ['from scratch']
    assert bccd.close_starts(rows, bccd.parse_args(['--close', '0'])) == []


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
