"""Every message the docs quote is what the code prints.

docs/troubleshooting.md quotes each error and warning a user meets (the
"you see" column of its table, the quotes in its other columns and
sections); own_data.md and install.md quote a few in full. Each quote is
produced here for real, cheaply: the call, the tool run or the toy training
that the user's mistake makes (a misspelt argument, a tiny annotation file
with the quoted defects, a toy model whose loss turns NaN, a checkpoint of
the quoted shapes, the set-up script with an interpreter that does not
exist). The quote must then appear in the output, where ``...``, ``…`` and
``<name>`` stand for any text; everything else is compared literally, so a
reworded message fails here until the page follows it.
"""
import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import os.path as osp
import re
import socket
import subprocess
from typing import Callable, Dict, Iterator, List

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope

import projects.focal_retina  # noqa: F401  (registers our components)
from tests.conftest import ROOT

register_all_modules()
DEVICE = 'cpu'
PAGE = 'docs/troubleshooting.md'
DEMO = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py')
# '...', '…' or '<name>', with the spaces around it: any text.
PLACEHOLDER = re.compile(r'\s*(?:\.\.\.|…|<[\w .-]+>)\s*')


@pytest.fixture(autouse=True)
def mmdet_scope():
    """mmdet's registries first, as in the tools (a toy Runner of another
    test leaves mmengine's scope current)."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _read(page: str) -> str:
    with open(osp.join(ROOT, page), encoding='utf-8') as f:
        return f.read()


def quote_pattern(quote: str) -> re.Pattern:
    """The quote with its placeholders as 'any text', the rest literal."""
    parts = PLACEHOLDER.split(quote)
    return re.compile('.*?'.join(re.escape(p) for p in parts), re.S)


def shows(quote: str, output: str) -> bool:
    return quote_pattern(quote).search(output) is not None


# --- how the messages are produced -------------------------------------


def raised(call: Callable[[], object]) -> str:
    """``ExceptionType: message`` of what ``call`` raises."""
    try:
        call()
    except Exception as exc:  # the message under test, whatever its type
        return f'{type(exc).__name__}: {exc}'
    raise AssertionError('no error was raised')


def exited(call: Callable[[], object]) -> str:
    """What a tool helper printed before exiting (``cli.fail``)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        with pytest.raises(SystemExit) as exc:
            call()
    assert exc.value.code == 2
    return err.getvalue()


@contextlib.contextmanager
def logged(logger=None) -> Iterator[List[str]]:
    """The messages logged through mmengine's current logger (or
    ``logger``) meanwhile."""
    lines: List[str] = []

    class Keep(logging.Handler):

        def emit(self, record):
            lines.append(record.getMessage())

    logger = logger or MMLogger.get_current_instance()
    handler = Keep()
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def build_head(**changes):
    cfg = Config.fromfile(DEMO).model.bbox_head
    cfg.update(changes)
    return MODELS.build(cfg)


def classes_cfg(num_classes: int, **splits) -> Config:
    cfg = dict(model=dict(bbox_head=dict(num_classes=num_classes)))
    for split, classes in splits.items():
        cfg[f'{split}_dataloader'] = dict(
            dataset=dict(metainfo=dict(classes=classes)))
    return Config(cfg)


def check_classes(num_classes: int, **splits) -> str:
    from projects.focal_retina.engine.cli import check_classes
    return raised(lambda: check_classes(classes_cfg(num_classes, **splits)))


def paths_cfg(img: str = 'img/') -> Config:
    return Config(
        dict(
            train_dataloader=dict(
                dataset=dict(
                    data_root='data/x/',
                    ann_file='ann.json',
                    data_prefix=dict(img=img)))))


def check_paths(cfg: Config, split: str = 'train') -> str:
    from projects.focal_retina.engine.cli import check_dataset_paths
    return exited(lambda: check_dataset_paths(cfg, (split, )))


def missing_image_folder() -> str:
    write_coco()
    return check_paths(paths_cfg(img='photos/'))


def missing_evaluator_file() -> str:
    write_coco()
    cfg = Config(
        dict(
            val_dataloader=paths_cfg().train_dataloader,
            val_evaluator=dict(ann_file='data/x/val.json')))
    return check_paths(cfg, 'val')


def write_coco(images: int = 4,
               anns=(),
               bad_files=(),
               missing=(),
               image: dict = None) -> str:
    """data/x/ann.json (one category) and data/x/img/<id>.jpg of 16 x 16
    px, ids 1..images; ``bad_files`` are not JPEG, ``missing`` not there;
    ``image`` replaces the first image entry."""
    os.makedirs('data/x/img', exist_ok=True)
    entries = []
    for i in range(1, images + 1):
        name = f'{i}.jpg'
        entries.append(dict(id=i, file_name=name, width=16, height=16))
        path = f'data/x/img/{name}'
        if i in missing:
            continue
        if i in bad_files:
            with open(path, 'wb') as f:
                f.write(b'not a jpeg')
        else:
            cv2.imwrite(path, np.full((16, 16, 3), 128, np.uint8))
    if image is not None:
        entries[0] = image
    with open('data/x/ann.json', 'w') as f:
        json.dump(
            dict(
                images=entries,
                annotations=list(anns),
                categories=[dict(id=1, name='cell')]), f)
    return 'data/x/ann.json'


def ann(ann_id: int, image_id: int, bbox) -> dict:
    area = bbox[2] * bbox[3] if len(bbox) == 4 else 1
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=1,
        bbox=bbox,
        area=area,
        iscrowd=0)


def checked_dataset(test_mode=True, pipeline=()):
    from projects.focal_retina.datasets import CheckedCocoDataset
    return CheckedCocoDataset(
        data_root='data/x/',
        ann_file='ann.json',
        data_prefix=dict(img='img/'),
        metainfo=dict(classes=('cell', )),
        test_mode=test_mode,
        pipeline=list(pipeline))


def dataset_log(**kwargs) -> str:
    with logged() as lines:
        checked_dataset(**kwargs)
    return '\n'.join(lines)


def excluded_images() -> str:
    """40 images: one file missing, one that does not decode."""
    write_coco(40, missing=(7, ), bad_files=(9, ))
    return dataset_log()


def boxes_dropped() -> str:
    """Three boxes of no size in image 4, one reaching out of image 2."""
    write_coco(
        4,
        anns=[
            ann(7, 2, [10, 10, 10, 10]),
            ann(12, 4, [1, 1, 0, 5]),
            ann(13, 4, [1, 1, 5, -1]),
            ann(14, 4, [1, 1, 0, 0])
        ])
    return dataset_log()


def annotation_error(**coco) -> str:
    """What the dataset raises on a malformed annotation file."""
    write_coco(**coco)
    return raised(checked_dataset)


class Toy(BaseModel):
    """A classification conv named as RetinaNet's (``num_classes`` x 1
    anchor outputs on ``channels`` inputs); loss_cls becomes NaN at the
    1-based iteration ``nan_at``."""

    def __init__(self, num_classes=36, channels=8, nan_at=None):
        super().__init__()
        self.bbox_head = nn.Module()
        self.bbox_head.retina_cls = nn.Conv2d(channels, num_classes, 3)
        self.channels, self.nan_at, self.calls = channels, nan_at, 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.calls += 1
        out = self.bbox_head.retina_cls(inputs.to(DEVICE))
        loss_cls = out.pow(2).mean()
        if self.calls == self.nan_at:
            loss_cls = loss_cls * float('nan')
        return dict(loss_cls=loss_cls) if mode == 'loss' else out


RUNS = iter(range(10**6))


def toy_runner(work_dir, model, max_iters=4, hooks=None, **kwargs):
    from projects.focal_retina.engine import FocalRetinaRunner
    data = [dict(inputs=torch.randn(model.channels, 3, 3)) for _ in range(8)]
    return FocalRetinaRunner(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=data,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=10**6),
            checkpoint=dict(
                type='SafeCheckpointHook', interval=1, by_epoch=False)),
        custom_hooks=hooks or [dict(type='NonFiniteGuardHook')],
        experiment_name=f'messages_{next(RUNS)}',
        **kwargs)


def classifier_checkpoint(path: str, num_classes: int, channels: int):
    """A checkpoint of the classification conv alone (what a detector of
    another number of classes holds there)."""
    torch.save(
        dict(
            meta={},
            state_dict={
                'bbox_head.retina_cls.weight':
                torch.zeros(num_classes, channels, 3, 3),
                'bbox_head.retina_cls.bias':
                torch.zeros(num_classes)
            }), path)


def mismatch() -> str:
    """load_from a checkpoint of 80 classes x 9 anchors into 4 x 9."""
    classifier_checkpoint('coco.pth', 720, 256)
    runner = toy_runner(
        'run',
        Toy(36, 256),
        load_from='coco.pth',
        hooks=[dict(type='CheckpointCompatibilityHook')])
    return raised(runner.train)


def allowed_mismatch_log(before: int, after: int, channels: int) -> str:
    """The log of a fine-tuning load that skips the classifier."""
    classifier_checkpoint('other.pth', before, channels)
    runner = toy_runner(
        'ft',
        Toy(after, channels),
        max_iters=0,
        load_from='other.pth',
        hooks=[
            dict(
                type='CheckpointCompatibilityHook',
                allow_mismatch=['bbox_head.retina_cls'])
        ])
    with logged(runner.logger) as lines:
        runner.train()
    return '\n'.join(lines)


def resume_mismatch() -> str:
    toy_runner('src', Toy(5), max_iters=1).train()
    runner = toy_runner(
        'dst',
        Toy(3),
        hooks=[
            dict(
                type='CheckpointCompatibilityHook',
                allow_mismatch=['bbox_head.retina_cls'])
        ],
        load_from='src/iter_1.pth',
        resume=True)
    return raised(runner.train)


def nan_loss() -> str:
    return raised(toy_runner('work_dirs/x', Toy(nan_at=3)).train)


def offline(tmp_path, monkeypatch) -> str:
    """A URL that cannot be fetched (a closed port on localhost: no test
    touches the network), nothing in an empty hub cache."""
    from mmengine.runner.checkpoint import CheckpointLoader
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    url = (f'https://127.0.0.1:{port}/retinanet_r18_fpn_1x_coco/'
           'retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth')
    return raised(lambda: CheckpointLoader.load_checkpoint(url))


def untrusted() -> str:
    from projects.focal_retina.engine import safe_load

    # An object of a class that is not weights: the loader refuses to
    # build it (nothing runs).
    torch.save(dict(args=argparse.Namespace(lr=0.01)), 'x.pth')
    return raised(lambda: safe_load('x.pth'))


def no_detection() -> str:
    from projects.focal_retina.evaluation.coco_metric import \
        ZeroIfEmptyCocoMetric
    metric = ZeroIfEmptyCocoMetric(ann_file=write_coco())
    empty = dict(
        img_id=1,
        bboxes=np.zeros((0, 4)),
        scores=np.zeros(0),
        labels=np.zeros(0, np.int64))
    with logged() as lines:
        metric.compute_metrics([({}, empty)] * 100)
    return '\n'.join(lines)


def not_evaluated() -> str:
    """Images the dataset excluded: the AP is over the others, named."""
    from projects.focal_retina.evaluation.coco_metric import \
        ZeroIfEmptyCocoMetric
    path = write_coco(anns=[ann(1, 1, [2, 2, 8, 8])])
    metric = ZeroIfEmptyCocoMetric(ann_file=path)
    metric.dataset_meta = dict(classes=('cell', ))
    pred = dict(
        img_id=1,
        bboxes=np.array([[2., 2., 10., 10.]]),
        scores=np.array([0.9]),
        labels=np.array([0]))
    with logged() as lines:
        metric.compute_metrics([(dict(img_id=1), pred)])
    return '\n'.join(lines)


def refused_test_dev_name(name: str) -> str:
    """tools/test.py's --test-dev handling, on a config it never reaches
    (the name is checked first)."""
    spec = importlib.util.spec_from_file_location(
        'test_tool', osp.join(ROOT, 'tools', 'test.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return exited(lambda: tool.use_test_dev(Config(), name))


def nan_submission() -> str:
    from projects.focal_retina.evaluation.testdev import validate_submission
    with open('image_info_test-dev2017.json', 'w') as f:
        json.dump(
            dict(
                images=[dict(id=1, width=16, height=16, file_name='1.jpg')],
                categories=[dict(id=1, name='person')]), f)
    dets = [
        dict(image_id=1, category_id=1, bbox=[1, 1, 4, 4], score=0.5)
        for _ in range(18)
    ]
    dets[17]['score'] = float('nan')
    name = 'detections_test-dev2017_retina-r101_results.json'
    with open(name, 'w') as f:
        json.dump(dets, f)  # writes NaN, as json.dump does
    return raised(
        lambda: validate_submission(name, 'image_info_test-dev2017.json'))


def setup_failure(tmp_path) -> str:
    """tools/setup_env.sh with an interpreter that does not exist: the
    first step fails, fast."""
    env = dict(
        os.environ,
        FOCAL_RETINA_VENV=str(tmp_path / 'venv'),
        PYTHON=str(tmp_path / 'no' / 'python3'))
    proc = subprocess.run(['bash',
                           osp.join(ROOT, 'tools', 'setup_env.sh')],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=60)
    assert proc.returncode != 0
    return proc.stderr


def demo_config_with(text: str) -> str:
    with open('x.py', 'w') as f:
        f.write(f'_base_ = {DEMO!r}\n{text}\n')
    return 'x.py'


def unknown_type() -> str:
    from projects.focal_retina.engine.cli import load_config
    path = demo_config_with(
        "model = dict(bbox_head=dict(loss_cls=dict(type='FocalLos')))")
    return exited(lambda: load_config(path))


def ohem_with_dr() -> str:
    head = Config.fromfile(DEMO).model.bbox_head
    head.loss_cls = dict(type='DRLoss', grouping='per_batch')
    head.train_cfg = dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.4,
            min_pos_iou=0),
        sampler=dict(type='OneStageOHEMSampler', batch_size=128),
        allowed_border=-1,
        pos_weight=-1,
        debug=False)
    return raised(lambda: MODELS.build(head))


# The quotes of docs/troubleshooting.md, as the page writes them, and how
# each message is produced (tmp_path is the working directory).
TRIGGERS: Dict[str, Callable] = {
    "FocalFamilyLoss: unknown argument 'gama'; did you mean 'gamma'? "
    'Valid arguments: gamma, ...':
    lambda t, m: raised(lambda: MODELS.build(
        dict(type='FocalFamilyLoss', gama=2.0))),
    "config 'x.py': model.bbox_head.loss_cls.type='FocalLos' is not a "
    'registered component; closest: FocalLoss, ...':
    lambda t, m: unknown_type(),
    'gamma must be >= 0':
    lambda t, m: raised(lambda: MODELS.build(
        dict(type='FocalFamilyLoss', gamma=-1.0))),
    'prior_prob must be in (0, 1)':
    lambda t, m: raised(lambda: build_head(prior_prob=1.5)),
    'nms_iou must be None or in (0, 1]':
    lambda t, m: raised(lambda: TASK_UTILS.build(
        dict(type='OneStageOHEMSampler', batch_size=128, nms_iou=1.5))),
    'batch_size must be an int >= 1':
    lambda t, m: raised(lambda: TASK_UTILS.build(
        dict(type='OneStageOHEMSampler', batch_size=0))),
    'anchor_generator.ratios must be a non-empty list ...':
    lambda t, m: raised(lambda: build_head(
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[],
            strides=[8, 16, 32, 64, 128]))),
    'neg_lambda must be a finite number > 0':
    lambda t, m: raised(lambda: MODELS.build(
        dict(type='DRLoss', neg_lambda=0.0))),
    "train_dataloader.dataset.metainfo.classes is the string 'tree', not a "
    "tuple of names ...: write classes = ('tree', )":
    lambda t, m: check_classes(1, train='tree'),
    'model.bbox_head.num_classes=1 but '
    'train_dataloader.dataset.metainfo.classes has 3 name(s) ...':
    lambda t, m: check_classes(1, train=('car', 'bus', 'van')),
    '... is empty':
    lambda t, m: check_classes(1, train=()),
    "... names 'car' more than once":
    lambda t, m: check_classes(2, train=('car', 'car')),
    '... differs from ...':
    lambda t, m: check_classes(1, train=('car', ), val=('bus', )),
    "train_dataloader.dataset.ann_file: annotation file 'data/x/ann.json' "
    'does not exist (data_root=..., ann_file=...)':
    lambda t, m: check_paths(paths_cfg()),
    'data_prefix.img: image folder':
    lambda t, m: missing_image_folder(),
    'val_evaluator.ann_file':
    lambda t, m: missing_evaluator_file(),
    'data/x/ann.json: 2 of 40 images excluded: data/x/img/7.jpg (missing), '
    'data/x/img/9.jpg (cannot be decoded)':
    lambda t, m: excluded_images(),
    'skipped image data/x/img/3.jpg (cannot be decoded); 1 skipped so far '
    'in this worker':
    lambda t, m: skipped_image(),
    'data/x/ann.json: 1 boxes clipped to the image (e.g. annotation 7 of '
    'image 2); 3 boxes dropped: zero or negative size (e.g. annotation 12 '
    'of image 4)':
    lambda t, m: boxes_dropped(),
    'AnnotationError: data/x/ann.json: annotation 5 of image 1: '
    'bbox=[1, 2, 3], expected [x, y, w, h] numbers':
    lambda t, m: annotation_error(anns=[ann(5, 1, [1, 2, 3])]),
    'image 3 has no "file_name"':
    lambda t, m: annotation_error(
        images=2, image=dict(id=3, width=16, height=16)),
    'not a COCO detection file':
    lambda t, m: annotation_error(anns=[dict(id=1, bbox=[1, 1, 4, 4])]),
    'no usable image':
    lambda t, m: annotation_error(images=2, missing=(1, 2)),
    'no detection on any of the 100 evaluation images: every AP is '
    'reported as 0':
    lambda t, m: no_detection(),
    '... images of the annotation file were not evaluated ...':
    lambda t, m: not_evaluated(),
    'the checkpoint does not fit the model, 2 key(s) differ (2 of another '
    'shape): bbox_head.retina_cls.weight: checkpoint (720, 256, 3, 3), model '
    '(36, 256, 3, 3); ... (likely another number of classes ...)':
    lambda t, m: mismatch(),
    '--resume needs a checkpoint that fits the model exactly ...':
    lambda t, m: resume_mismatch(),
    'cannot download checkpoint https://...: ... Offline, fetch that file '
    'elsewhere and put it at ...':
    offline,
    'UntrustedCheckpointError: refused to load checkpoint x.pth: ...':
    lambda t, m: untrusted(),
    'non-finite loss term loss_cls=nan at iteration 3; the step was not '
    'applied, the weights and the checkpoints in <work dir> are from '
    'before it. Try a lower lr ...':
    lambda t, m: nan_loss(),
    'train_cfg.sampler=OneStageOHEMSampler ranks anchors by their own loss, '
    "but loss_cls=DRLoss(grouping='per_batch') gives one value per group "
    '...':
    lambda t, m: ohem_with_dr(),
    "--test-dev 'retina_r101': expected letters, digits and \"-\" only ...":
    lambda t, m: refused_test_dev_name('retina_r101'),
    'test-dev ... detection 17 (...): score=nan, expected a finite number':
    lambda t, m: nan_submission(),
    '[setup] FAILED at step: ...':
    lambda t, m: setup_failure(t),
    '[setup] likely fix: ...':
    lambda t, m: setup_failure(t),
    'bbox_head.retina_cls.weight (36, 128, 3, 3)->(18, 128, 3, 3)':
    lambda t, m: allowed_mismatch_log(36, 18, 128),
}


def skipped_image() -> str:
    """A training image that became unreadable after the dataset was built
    (the 'exists' check passed): skipped, named, another one drawn."""
    write_coco()
    dataset = checked_dataset(
        test_mode=False, pipeline=[dict(type='LoadImageFromFile')])
    with open('data/x/img/3.jpg', 'wb') as f:
        f.write(b'truncated')
    index = [dataset.get_data_info(i)['img_id']
             for i in range(len(dataset))].index(3)
    with logged() as lines:
        assert dataset.prepare_data(index) is None
    return '\n'.join(lines)


def page_quotes(text: str) -> List[str]:
    """The messages troubleshooting.md quotes: every code span of the
    table's first column ("you see"), the spans of its other columns that
    elide (``...``: a message's part), the ``[setup]`` lines, and the
    skipped-key example of its checkpoint section."""
    quotes = []
    for line in text.splitlines():
        if not line.startswith('| ') or line.startswith(('| you see', '|---')):
            continue
        cells = line.strip('|').split(' | ')
        quotes += re.findall(r'`([^`]+)`', cells[0])
        for cell in cells[1:]:
            quotes += [
                q for q in re.findall(r'`([^`]+)`', cell)
                if q.startswith('...') or q.endswith('...')
            ]
    quotes += re.findall(r'`(\[setup\][^`]*)`', text)
    quotes += re.findall(r'`(bbox_head\.retina_cls\.weight \([^`]*->[^`]*)`',
                         text)
    return quotes


QUOTES = page_quotes(_read(PAGE))


def test_every_quote_is_produced_here():
    """Each message the page quotes has its trigger below, and each
    trigger's quote is on the page (a new or reworded quote needs both)."""
    assert len(QUOTES) >= 30, QUOTES
    assert sorted(set(QUOTES) - set(TRIGGERS)) == [], 'quotes without a ' \
        'trigger in tests/test_docs_messages.py'
    assert sorted(set(TRIGGERS) - set(QUOTES)) == [], f'not quoted in {PAGE}'


@pytest.mark.parametrize('quote', sorted(TRIGGERS), ids=lambda q: q[:50])
def test_quote_is_what_the_code_prints(quote, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = TRIGGERS[quote](tmp_path, monkeypatch)
    assert shows(quote, output), (f'{PAGE} quotes\n  {quote}\nthe code '
                                  f'prints\n  {output}')


def test_the_comparison_bites():
    """A placeholder stands for text, but not for a change in the words
    around it: the page's earlier checkpoint quote fails against today's
    message, and a quote is not found in the wrong order."""
    message = ('the checkpoint does not fit the model, 2 key(s) differ (2 of '
               'another shape): bbox_head.retina_cls.weight: checkpoint '
               '(720, 256, 3, 3), model (36, 256, 3, 3); ...')
    assert not shows(
        'the checkpoint does not fit the model: '
        'bbox_head.retina_cls.weight: checkpoint (720, 256, 3, 3), model '
        '(36, 256, 3, 3) (likely another number of classes ...)', message)
    assert shows('the checkpoint does not fit the model, ... key(s) differ',
                 message)
    assert not shows('... model (36, 256, 3, 3) ... 2 key(s) differ', message)
    assert shows('x <N> y', 'x 12 y') and not shows('x <N> y', 'x 12 z')


# Messages other pages quote in full: (page, the quote, how it is made,
# example values of the page that the output may have otherwise).
OTHER_QUOTES = [
    ('docs/own_data.md',
     'checkpoint loaded except for these model keys, which keep their '
     'initialisation: bbox_head.retina_cls.bias (720,)->(9,), '
     'bbox_head.retina_cls.weight (720, 256, 3, 3)->(9, 256, 3, 3)',
     lambda t, m: allowed_mismatch_log(720, 9, 256), {}),
    ('docs/own_data.md',
     'cannot download checkpoint https://download.openmmlab.com/.../'
     'retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth: [Errno -3] '
     'Temporary failure in name resolution. Offline, fetch that file '
     'elsewhere and put it at ~/.cache/torch/hub/checkpoints/'
     'retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth (looked for '
     'there first), or set load_from / init_cfg.checkpoint to a local copy; '
     'or train without it (load_from=None, model.backbone.init_cfg=None: '
     'from scratch, as configs/own_data/retina_r18_fpn_own_data.py does)',
     offline, {
         'https://download.openmmlab.com/': 'https://...',
         '[Errno -3] Temporary failure in name resolution': '...',
         '~/.cache/torch/hub/checkpoints/': '.../hub/checkpoints/'
     }),
    ('docs/install.md', '[setup] FAILED at step: ...',
     lambda t, m: setup_failure(t), {}),
    ('docs/install.md', '[setup] likely fix: ...',
     lambda t, m: setup_failure(t), {}),
]


@pytest.mark.parametrize(
    'page,quote,trigger,examples',
    OTHER_QUOTES,
    ids=[f'{p}:{q[:40]}' for p, q, _, _ in OTHER_QUOTES])
def test_other_pages_quote_what_the_code_prints(page, quote, trigger, examples,
                                                tmp_path, monkeypatch):
    assert shows(quote, _read(page)), f'{page} quotes it no more'
    monkeypatch.chdir(tmp_path)
    output = trigger(tmp_path, monkeypatch)
    for example, general in examples.items():
        quote = quote.replace(example, general)
    assert shows(quote, output), (f'{page} quotes\n  {quote}\nthe code '
                                  f'prints\n  {output}')


def test_install_page_names_a_real_step_and_hint():
    """install.md's example failure is of a step the script has, with that
    step's hint (building mmcv fails only on a broken compiler, too
    costly to provoke here)."""
    text = _read('docs/install.md')
    step = re.search(r'\[setup\] FAILED at step: (.+)', text).group(1)
    hint = re.search(r'\[setup\] likely fix: (.+)', text).group(1)
    script = _read('tools/setup_env.sh')
    steps = dict(
        re.findall(r"step '([^']+)' \\\n\s+[\"']([^\"']+)[\"']", script))
    assert steps.get(step.strip()) == hint.strip(), (step, hint, steps)


def test_setup_failure_names_the_step_and_its_hint(tmp_path):
    """The two [setup] lines come together, after the step's name."""
    out = setup_failure(tmp_path)
    assert re.search(
        r'\[setup\] FAILED at step: create virtualenv\n'
        r'\[setup\] likely fix: install python3 with venv support', out), out
