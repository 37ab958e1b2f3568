"""Bad configs get a message naming the key or value and what was expected:
misspelt arguments of our components (closest valid one first), unknown
component types, invalid hyperparameters at build time, and missing
annotation files or image folders from the command-line tools."""
import os.path as osp
import subprocess
import sys

import pytest
from mmdet.registry import MODELS, TASK_UTILS

import projects.focal_retina  # noqa: F401
from projects.focal_retina.utils.arguments import check_config_types
from tests.conftest import ROOT

HEAD = dict(type='FocalRetinaHead', num_classes=2, in_channels=8)


@pytest.mark.parametrize('registry,cfg,key,suggestion', [
    (MODELS, dict(type='FocalFamilyLoss', gama=2.0), 'gama', 'gamma'),
    (MODELS, dict(type='DRLoss', tua=4.0), 'tua', 'tau'),
    (MODELS, {**HEAD, 'prior': 0.01}, 'prior', 'prior_prob'),
    (MODELS, {**HEAD, 'feat_channel': 8}, 'feat_channel', 'feat_channels'),
    (TASK_UTILS, dict(type='OneStageOHEMSampler', batch=128), 'batch',
     'batch_size'),
])
def test_misspelt_argument_names_the_key_and_closest(registry, cfg, key,
                                                     suggestion):
    with pytest.raises(TypeError) as err:
        registry.build(cfg)
    msg = str(err.value)
    assert f'unknown argument {key!r}; did you mean {suggestion!r}?' in msg
    assert 'Valid arguments: ' + suggestion in msg  # closest listed first


def test_head_still_takes_mmdet_arguments():
    head = MODELS.build({**HEAD, 'feat_channels': 8, 'stacked_convs': 1})
    assert head.feat_channels == 8


@pytest.mark.parametrize('cfg,where,closest', [
    (dict(bbox_head=dict(loss_cls=dict(type='FocalFamliyLoss'))),
     'model.bbox_head.loss_cls.type', 'FocalFamilyLoss'),
    (dict(train_cfg=dict(sampler=dict(type='OneStageOhemSampler'))),
     'model.train_cfg.sampler.type', 'OneStageOHEMSampler'),
    (dict(backbone=[dict(type='ResNet'), dict(type='ResNte')]),
     'model.backbone[1].type', 'ResNet'),
])
def test_unknown_type_names_the_key_path_and_closest(cfg, where, closest):
    with pytest.raises(KeyError) as err:
        check_config_types(cfg, [MODELS, TASK_UTILS])
    msg = err.value.args[0]
    assert msg.startswith(f'{where}=')
    assert msg.split('closest: ')[1].startswith(closest)


def test_nms_and_init_types_are_not_registry_names():
    check_config_types(
        dict(
            test_cfg=dict(nms=dict(type='nms')),
            init_cfg=dict(type='Normal'),
            bbox_head=dict(type='FocalRetinaHead')), [MODELS, TASK_UTILS])


@pytest.mark.parametrize('registry,cfg,match', [
    (MODELS, dict(type='FocalFamilyLoss', gamma=-1.0), 'gamma must be >= 0'),
    (MODELS, dict(type='FocalFamilyLoss', alpha=1.5), 'alpha must be None '
     r'or in \[0, 1\]'),
    (MODELS, {**HEAD, 'prior_prob': 1.0}, r'prior_prob must be in \(0, 1\)'),
    (MODELS, {**HEAD, 'prior_prob': 0.0}, r'prior_prob must be in \(0, 1\)'),
    (TASK_UTILS, dict(type='OneStageOHEMSampler', batch_size=0),
     'batch_size must be an int >= 1'),
    (TASK_UTILS, dict(type='OneStageOHEMSampler', nms_iou=1.5),
     r'nms_iou must be None or in \(0, 1\]'),
    (TASK_UTILS, dict(type='OneStageOHEMSampler', nms_iou=0.0),
     r'nms_iou must be None or in \(0, 1\]'),
    (MODELS, {**HEAD, 'anchor_generator': dict(
        type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
        ratios=[], strides=[8, 16, 32, 64, 128])},
     'anchor_generator.ratios must be a non-empty list'),
    (MODELS, {**HEAD, 'anchor_generator': dict(
        type='AnchorGenerator', scales=[], ratios=[1.0],
        strides=[8, 16, 32, 64, 128])},
     'anchor_generator.scales must be a non-empty list'),
    (MODELS, {**HEAD, 'anchor_generator': dict(
        type='AnchorGenerator', octave_base_scale=4, scales_per_octave=0,
        ratios=[1.0], strides=[8, 16, 32, 64, 128])},
     'scales_per_octave must be an int >= 1'),
    (MODELS, dict(type='DRLoss', pos_lambda=0.0), 'pos_lambda must be a '
     'finite number > 0'),
    (MODELS, dict(type='DRLoss', neg_lambda=-1.0), 'neg_lambda must be a '
     'finite number > 0'),
])
def test_invalid_hyperparameters_fail_at_build(registry, cfg, match):
    with pytest.raises(ValueError, match=match):
        registry.build(cfg)


def run_train(*args):
    env = dict(__import__('os').environ, CUDA_VISIBLE_DEVICES='')
    return subprocess.run(
        [sys.executable, 'tools/train.py', *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env)


@pytest.mark.slow
@pytest.mark.parametrize('option,message', [
    ('train_dataloader.dataset.ann_file=nope/train.json',
     "train_dataloader.dataset.ann_file: annotation file "
     "'{root}/nope/train.json' does not exist"),
    ('train_dataloader.dataset.data_prefix.img=nope/',
     "train_dataloader.dataset.data_prefix.img: image folder "
     "'{root}/nope/' does not exist"),
    ('val_evaluator.ann_file={root}/nope.json',
     "val_evaluator.ann_file: annotation file '{root}/nope.json' does not "
     'exist'),
    ('model.bbox_head.loss_cls.type=FocalLos',
     "model.bbox_head.loss_cls.type='FocalLos' is not a registered "
     'component; closest: FocalLoss'),
])
def test_train_names_the_missing_path_or_type(tiny_shapes, option, message):
    root = tiny_shapes
    opts = [
        f'{s}_dataloader.dataset.data_root={root}/' for s in ('train', 'val')
    ] + [f'val_evaluator.ann_file={root}/annotations/val.json']
    proc = run_train('configs/demo/retina_r18_fpn_shapes.py',
                     '--cfg-options', *opts, option.format(root=root))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert message.format(root=osp.normpath(root)).replace('//', '/') in \
        out.replace('//', '/'), out[-3000:]
    assert 'Traceback' not in out


CLASS_MISTAKES = [
    ("('tree')", 'len(classes)', "is the string 'tree'",
     "classes = ('tree', )"),
    ('()', '1', 'is empty', 'at least one class name'),
    ("('tree', 'bush', 'tree')", 'len(classes)',
     "names 'tree' more than once", 'one name'),
    ("('tree', 'bush')", '1', 'num_classes=1 but',
     'num_classes=len(classes)'),
]


@pytest.mark.parametrize('classes,num,what,fix', CLASS_MISTAKES)
def test_class_name_mistakes_are_refused(tmp_path, classes, num, what, fix):
    """The own-data recipe with classes = ('tree') trained with 4 classes
    (len('tree')) and reported AP 0 without a word. Each mistake is one
    line naming the key and the fix, before anything is built."""
    leaf = tmp_path / 'trees.py'
    recipe = osp.join(ROOT, 'configs/own_data/retina_r18_fpn_own_data.py')
    leaf.write_text(
        f'_base_ = {recipe!r}\n'
        f'classes = {classes}\n'
        f'model = dict(bbox_head=dict(num_classes={num}))\n'
        'train_dataloader = dict(dataset=dict(metainfo=dict('
        'classes=classes)))\n'
        'val_dataloader = dict(dataset=dict(metainfo=dict('
        'classes=classes)))\n'
        'test_dataloader = val_dataloader\n')
    out = subprocess.run(
        [sys.executable, 'tools/train.py',
         str(leaf), '--work-dir',
         str(tmp_path / 'w')],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [ln for ln in out.stderr.splitlines() if 'error:' in ln]
    assert len(errors) == 1, out.stderr[-2000:]
    assert what in errors[0] and fix in errors[0], errors[0]
    assert 'Traceback' not in out.stderr
    assert not (tmp_path / 'w').exists()


def test_checked_dataset_refuses_a_string_of_classes(tmp_path):
    from projects.focal_retina.datasets import CheckedCocoDataset
    with pytest.raises(ValueError, match=r"write classes = \('tree', \)"):
        CheckedCocoDataset(
            ann_file=str(tmp_path / 'a.json'),
            metainfo=dict(classes='tree'),
            lazy_init=True)
