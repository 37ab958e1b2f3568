"""The evaluation plots and TensorBoard through the real tools: the own-data
recipe ends training with its plots folder (from the last validation) and,
with ``--tensorboard``, TensorBoard events of the losses, lr and validation
AP; ``tools/test.py --plots DIR`` writes the plots of the evaluated set;
bad input is one line. CPU only, a 2-iteration run on the own-data example.
"""
import glob
import json
import os.path as osp
import subprocess
import sys
from collections import Counter
from importlib.util import find_spec

import cv2
import pytest
from mmengine.config import Config

from tests.conftest import ROOT
from tests.test_tools.test_analysis_tools import load_tool
from tests.test_tools.test_cli import run_tool, tool_env
from tests.test_tools.test_own_data import CLASSES, FAST, child_config

pytestmark = pytest.mark.slow
HAS_TENSORBOARD = find_spec('tensorboard') is not None
PLOTS = ('confusion_matrix.png', 'confusion_matrix.json', 'pr_curves.png',
         'pr_curves.csv')
# An untrained model scores below the recipe's 0.05: keep its boxes so that
# COCOeval runs and the curves exist.
KEEP_BOXES = 'model.test_cfg.score_thr=0'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The own-data recipe, 2 iterations (validated after the last one),
    with --tensorboard where the package is installed."""
    root = str(tmp_path_factory.mktemp('own') / 'mine')
    run_tool('tools/make_own_data_example.py', root, '--num', '4')
    run_tool('tools/dataset_converters/csv2coco.py', f'{root}/boxes.csv',
             '--img-root', f'{root}/images', '--out',
             f'{root}/annotations/ann.json', '--split', '0.5')
    tmp = tmp_path_factory.mktemp('run')
    cfg = child_config(tmp / 'mine.py', root)
    work = str(tmp / 'work')
    out = run_tool('tools/train.py', cfg, '--work-dir', work,
                   *(['--tensorboard'] if HAS_TENSORBOARD else []),
                   '--cfg-options', 'train_cfg.max_iters=2', KEEP_BOXES, *FAST)
    return root, cfg, work, out


def check_plots(folder: str, ann_file: str) -> None:
    """The four files, the matrix over the classes plus background, and
    each ground-truth box in its row at least once (matched or missed)."""
    for name in PLOTS:
        assert osp.getsize(osp.join(folder, name)) > 0, name
    for name in ('confusion_matrix.png', 'pr_curves.png'):
        assert cv2.imread(osp.join(folder, name)) is not None
    matrix = json.load(open(osp.join(folder, 'confusion_matrix.json')))
    assert matrix['labels'] == list(CLASSES) + ['background']
    coco = json.load(open(ann_file))
    names = {c['id']: c['name'] for c in coco['categories']}
    per_class = Counter(names[a['category_id']] for a in coco['annotations'])
    assert sum(per_class.values()) > 0
    for i, name in enumerate(CLASSES):
        assert sum(matrix['counts'][i]) >= per_class[name], name
    with open(osp.join(folder, 'pr_curves.csv')) as f:
        assert len(f.readlines()) == 1 + 101 * len(CLASSES)


def test_training_ends_with_plots_of_the_last_validation(trained):
    root, _, work, out = trained
    assert 'plots of the last validation' in out, out[-3000:]
    check_plots(osp.join(work, 'plots'), f'{root}/annotations/ann_val.json')


@pytest.mark.skipif(not HAS_TENSORBOARD, reason='tensorboard not installed')
def test_tensorboard_has_losses_lr_and_validation_ap(trained):
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    events = glob.glob(
        osp.join(trained[2], '*', 'vis_data', 'events.out.tfevents.*'))
    assert len(events) == 1, trained[3][-3000:]
    acc = EventAccumulator(events[0])
    acc.Reload()
    tags = acc.Tags()['scalars']
    for tag in ('loss', 'loss_cls', 'lr', 'coco/bbox_mAP'):
        assert tag in tags, tags
    assert [e.step for e in acc.Scalars('loss')] == [1, 2]


def test_test_tool_writes_plots(trained, tmp_path):
    root, cfg, work, _ = trained
    out = run_tool('tools/test.py', cfg, osp.join(work, 'iter_2.pth'),
                   '--work-dir', str(tmp_path), '--plots',
                   str(tmp_path / 'plots'), '--cfg-options', KEEP_BOXES, *FAST)
    assert 'plots of the test' in out, out[-3000:]
    check_plots(str(tmp_path / 'plots'), f'{root}/annotations/ann_val.json')


def test_plots_path_that_is_a_file_is_one_line(trained, tmp_path):
    _, cfg, work, _ = trained
    path = tmp_path / 'taken'
    path.write_text('')
    out = run_tool(
        'tools/test.py',
        cfg,
        osp.join(work, 'iter_2.pth'),
        '--plots',
        str(path),
        expect_rc=2)
    assert f"--plots '{path}' is a file; expected a folder" in out
    assert 'Traceback' not in out


def test_tensorboard_missing_is_one_line(tmp_path):
    # A tensorboard that fails to import, as on a machine without it.
    fake = tmp_path / 'fake' / 'tensorboard'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text("raise ImportError('not installed')\n")
    env = tool_env()
    env['PYTHONPATH'] = str(tmp_path / 'fake')
    proc = subprocess.run([
        sys.executable, 'tools/train.py',
        'configs/own_data/retina_r18_fpn_own_data.py', '--tensorboard',
        '--work-dir',
        str(tmp_path / 'work')
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300,
                          env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert ('--tensorboard needs the tensorboard package: pip install '
            'tensorboard==2.21.0') in out
    assert 'Traceback' not in out


def test_plots_option_keeps_cocoeval_and_adds_the_hook(tmp_path):
    """mmdet's CocoMetric becomes ZeroIfEmptyCocoMetric (the one that keeps
    its COCOeval), a config's own PlotsHook is reused, and no COCO metric
    or --test-dev is refused."""
    tool = load_tool('tools/test.py')
    cfg = Config(
        dict(test_evaluator=[
            dict(type='DumpDetResults', out_file_path='x.pkl'),
            dict(type='CocoMetric', ann_file='val.json')
        ]))
    tool.use_plots(cfg, 'rel/plots', False)
    assert cfg.test_evaluator[1].type == 'ZeroIfEmptyCocoMetric'
    assert cfg.test_evaluator[1].ann_file == 'val.json'
    assert cfg.custom_hooks == [
        dict(
            type='PlotsHook',
            after_train=False,
            test_out_dir=osp.abspath('rel/plots'))
    ]
    own = Config(
        dict(
            test_evaluator=dict(type='ZeroIfEmptyCocoMetric'),
            custom_hooks=[dict(type='PlotsHook', score_thr=0.5)]))
    tool.use_plots(own, str(tmp_path), False)
    assert own.custom_hooks == [
        dict(type='PlotsHook', score_thr=0.5, test_out_dir=str(tmp_path))
    ]
    for evaluator, test_dev, expected in [
        (dict(type='VOCMetric'), False, 'needs a COCO metric'),
        (dict(type='CocoMetric'), True, 'needs ground truth'),
    ]:
        with pytest.raises(SystemExit) as exc:
            tool.use_plots(
                Config(dict(test_evaluator=evaluator)), str(tmp_path),
                test_dev)
        assert exc.value.code == 2
