"""The configs of mmdet's released COCO RetinaNet weights rebuild the model
those weights were trained with (key for key, shape for shape, against
mmdet's own config of that name; our head and fused loss in mmdet's
setting, whose numbers tests/test_models/test_stock_equivalence.py
compares), name the right file, and the own-data variants start from them
as they say; docs/configs.md's table says what every config builds.
Nothing is downloaded."""
import glob
import os.path as osp
import re

import pytest
import yaml
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from tests.conftest import ROOT

register_all_modules()
MMDET_RETINANET = osp.join(
    osp.dirname(__import__('mmdet').__file__), '.mim', 'configs', 'retinanet')
PRETRAINED = osp.join(ROOT, 'configs', 'pretrained')
OWN = osp.join(ROOT, 'configs', 'own_data')
ZOO = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
# From mmdet's README of configs/retinanet (Results and Models), by hand.
RELEASED = {
    'retinanet_r18_fpn_1x_coco':
    'retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth',
    'retinanet_r50_fpn_1x_coco':
    'retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth',
    'retinanet_r101_fpn_1x_coco':
    'retinanet_r101_fpn_1x_coco_20200130-7a93545f.pth',
}


def state_shapes(cfg_path: str) -> dict:
    cfg = Config.fromfile(cfg_path)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_pretrained_config_is_listed():
    found = {
        osp.splitext(osp.basename(p))[0]
        for p in glob.glob(osp.join(PRETRAINED, '*.py'))
    }
    assert found == set(RELEASED)


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_same_model_as_mmdet_config(name):
    """Keys and shapes equal those of mmdet's config the weights came
    from; the stock neck (no ReLU before P7, unlike the paper configs)."""
    ours = state_shapes(osp.join(PRETRAINED, name + '.py'))
    theirs = state_shapes(osp.join(MMDET_RETINANET, name + '.py'))
    assert ours == theirs
    cfg = Config.fromfile(osp.join(PRETRAINED, name + '.py'))
    assert not cfg.model.neck.get('relu_before_extra_convs', False)
    assert cfg.model.bbox_head.num_classes == 80
    # 9 anchors x 80 classes, 9 x 4 box deltas, on 256 channels
    assert ours['bbox_head.retina_cls.weight'] == (720, 256, 3, 3)
    assert ours['bbox_head.retina_reg.weight'] == (36, 256, 3, 3)


def without_scope(value):
    """A resolved config as plain data, without the ``_scope_`` keys that
    mmengine adds when mmdet's config is read directly rather than through
    ``mmdet::``."""
    if isinstance(value, dict):
        return {
            k: without_scope(v)
            for k, v in value.items() if k != '_scope_'
        }
    if isinstance(value, (list, tuple)):
        return type(value)(without_scope(v) for v in value)
    return value


# What configs/pretrained/ changes in mmdet's model: our head and fused
# loss, in mmdet's setting (its normaliser, prior and init, same FL).
STOCK_HEAD = dict(
    type='FocalRetinaHead',
    normalizer='per_gpu',
    prior_prob=0.01,
    init_cfg=dict(
        type='Normal',
        layer='Conv2d',
        std=0.01,
        override=dict(
            type='Normal', name='retina_cls', std=0.01, bias_prob=0.01)),
    loss_cls=dict(
        type='FocalFamilyLoss',
        use_sigmoid=True,
        gamma=2.0,
        alpha=0.25,
        loss_weight=1.0))


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_mmdets_config_but_our_head_and_loss(name):
    """Resolved, each config is mmdet's of the same name (model, data,
    schedule, runtime) except for the head's class and loss class, the
    settings that make them mmdet's (STOCK_HEAD), the custom import and
    load_from; the neck and L1 box loss stay mmdet's."""
    ours = without_scope(
        Config.fromfile(osp.join(PRETRAINED, name + '.py')).to_dict())
    theirs = without_scope(
        Config.fromfile(osp.join(MMDET_RETINANET, name + '.py')).to_dict())
    head = ours['model']['bbox_head']
    assert {k: head[k] for k in STOCK_HEAD} == STOCK_HEAD
    assert head['loss_bbox'] == dict(type='L1Loss', loss_weight=1.0)
    # mmdet's RetinaHead takes init_cfg as a default argument
    assert 'init_cfg' not in theirs['model']['bbox_head']
    assert theirs['model']['bbox_head']['type'] == 'RetinaHead'
    assert theirs['model']['bbox_head']['loss_cls'] == dict(
        STOCK_HEAD['loss_cls'], type='FocalLoss')
    for key in STOCK_HEAD:
        head.pop(key)
        theirs['model']['bbox_head'].pop(key, None)
    # and our channels-last hook (tools/test.py, --amp training on a CPU)
    assert ours.pop('custom_hooks') == [
        dict(type='ChannelsLastHook', when='bf16')
    ]
    assert 'custom_hooks' not in theirs
    for key in ('custom_imports', 'load_from'):
        ours.pop(key)
        theirs.pop(key, None)
    assert ours == theirs


def test_r50_has_the_354_keys_counted_by_hand():
    """Backbone: stem conv + BN (1 + 5 with num_batches_tracked), 16
    bottlenecks of 3 convs + 3 BNs (18), 4 downsamples (6): 318. FPN: 3
    laterals + 5 output convs, weight and bias: 16. Head: 4 + 4 tower convs
    and the two output convs, weight and bias: 20. 354 in all."""
    shapes = state_shapes(osp.join(PRETRAINED, 'retinanet_r50_fpn_1x_coco.py'))
    assert len(shapes) == 6 + 16 * 18 + 4 * 6 + 16 + 20 == 354
    # the paper config has the same keys and shapes: only the forward of
    # P7 differs, which is why these weights get their own config
    paper = state_shapes(osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py'))
    assert paper == shapes
    assert Config.fromfile(osp.join(
        ROOT, 'configs',
        'retina_r50_fpn_1x.py')).model.neck.relu_before_extra_convs is True


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_url_names_the_released_file(name):
    cfg = Config.fromfile(osp.join(PRETRAINED, name + '.py'))
    assert cfg.load_from == f'{ZOO}{name}/{RELEASED[name]}'
    assert cfg.custom_imports.imports == ['projects.focal_retina']


def test_urls_agree_with_mmdet_metafile():
    """mmdet's metafile lists each released config with its weights."""
    with open(osp.join(MMDET_RETINANET, 'metafile.yml')) as f:
        models = {m['Name']: m['Weights'] for m in yaml.safe_load(f)['Models']}
    for name, file in RELEASED.items():
        assert models[name] == f'{ZOO}{name}/{file}'


def test_class_names_are_coco():
    from mmdet.datasets import CocoDataset
    cfg = Config.fromfile(osp.join(PRETRAINED, 'retinanet_r50_fpn_1x_coco.py'))
    assert cfg.test_dataloader.dataset.type == 'CocoDataset'
    classes = CocoDataset.METAINFO['classes']
    assert len(classes) == 80 and classes[0] == 'person'
    assert 'chair' in classes


@pytest.mark.parametrize('depth', [18, 50])
def test_coco_fine_tuning_starts_from_the_released_weights(depth):
    name = f'retinanet_r{depth}_fpn_1x_coco'
    own = Config.fromfile(
        osp.join(OWN, f'retinanet_r{depth}_fpn_own_data_coco.py'))
    assert own.load_from == f'{ZOO}{name}/{RELEASED[name]}'
    assert own.model.backbone.init_cfg is None  # no ImageNet fetch first
    ours = state_shapes(
        osp.join(OWN, f'retinanet_r{depth}_fpn_own_data_coco.py'))
    zoo = state_shapes(osp.join(MMDET_RETINANET, name + '.py'))
    differ = sorted(k for k in zoo if ours.get(k) != zoo[k])
    assert set(ours) == set(zoo)
    # one class: 9 anchors x 1
    assert differ == [
        'bbox_head.retina_cls.bias', 'bbox_head.retina_cls.weight'
    ]
    assert ours['bbox_head.retina_cls.weight'] == (9, 256, 3, 3)
    hooks = {h['type']: h for h in own.custom_hooks}
    assert hooks['CheckpointCompatibilityHook']['allow_mismatch'] == [
        'bbox_head.retina_cls'
    ]
    head = own.model.bbox_head
    assert {k: head[k] for k in STOCK_HEAD} == STOCK_HEAD
    assert head.num_classes == 1


def test_imagenet_r50_variant_is_mmdets_model_on_our_components():
    """The R-50 head is trained from its init here: mmdet's init_cfg and
    prior (STOCK_HEAD), so a seed gives mmdet's initial head."""
    cfg = Config.fromfile(
        osp.join(OWN, 'retinanet_r50_fpn_own_data_imagenet.py'))
    head = cfg.model.bbox_head
    assert {k: head[k] for k in STOCK_HEAD} == STOCK_HEAD
    assert head.loss_bbox.type == 'L1Loss'
    assert not cfg.model.neck.get('relu_before_extra_convs', False)


@pytest.mark.parametrize('leaf,checkpoint', [
    ('retina_r18_fpn_own_data_imagenet.py', 'torchvision://resnet18'),
    ('retinanet_r50_fpn_own_data_imagenet.py', 'torchvision://resnet50'),
])
def test_imagenet_variants(leaf, checkpoint):
    cfg = Config.fromfile(osp.join(OWN, leaf))
    assert cfg.load_from is None
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=checkpoint)
    assert cfg.model.backbone.norm_eval is True
    assert cfg.model.backbone.frozen_stages == 1


@pytest.mark.parametrize('leaf,preset', [
    ('retina_r18_fpn_own_data_photo.py', 'photo_pipeline'),
    ('retina_r18_fpn_own_data_overhead.py', 'overhead_pipeline'),
    ('retina_r18_fpn_own_data_imagenet.py', 'photo_pipeline'),
    ('retinanet_r18_fpn_own_data_coco.py', 'photo_pipeline'),
    ('retinanet_r50_fpn_own_data_imagenet.py', 'photo_pipeline'),
])
def test_variants_validate_keep_the_best_and_report_each_class(leaf, preset):
    cfg = Config.fromfile(osp.join(OWN, leaf))
    assert cfg.train_dataloader.dataset.pipeline == cfg[preset]
    types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    for step in ('RandomResize', 'RandomCrop', 'PhotoMetricDistortion',
                 'RandomFlip'):
        assert step in types
    assert ('RandomRot90' in types) == (preset == 'overhead_pipeline')
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.val_interval < cfg.train_cfg.max_iters
    assert cfg.default_hooks.checkpoint.save_best == 'coco/bbox_mAP'
    assert cfg.default_hooks.checkpoint.rule == 'greater'
    assert cfg.val_evaluator.classwise is True
    assert cfg.val_evaluator.type == 'ZeroIfEmptyCocoMetric'


def test_from_scratch_recipe_reports_each_class():
    cfg = Config.fromfile(osp.join(OWN, 'retina_r18_fpn_own_data.py'))
    assert cfg.val_evaluator.classwise is True
    assert cfg.load_from is None and cfg.model.backbone.init_cfg is None


def table_rows() -> list:
    """docs/configs.md's table of which config builds which model, as
    (config paths, normaliser, ReLU before P7, box loss, cls loss) rows."""
    with open(osp.join(ROOT, 'docs', 'configs.md')) as f:
        text = f.read()
    section = text.split('## Which config builds which model')[1]
    section = section.split('\n## ')[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) != 7 or cells[0] in ('configs', '---'):
            continue
        paths = []
        for pattern in re.findall(r'`([^`]+)`', cells[0]):
            full = osp.join(ROOT, 'configs', pattern)
            if pattern.endswith('/'):
                full = osp.join(full, '**', '*.py')
            paths += [
                p for p in glob.glob(full, recursive=True) if '_base_' not in p
            ]
        rows.append((cells[0], sorted(paths), *cells[2:6]))
    return rows


# The table's box-loss cells: (type, beta).
BOX_LOSSES = {
    'smooth L1, β 0.11': ('SmoothL1Loss', 0.11),
    'L1': ('L1Loss', None)
}


def test_configs_table_says_what_each_config_builds():
    """Every config is in one row of the table, and resolves to that row's
    normaliser, P7, box loss and classification loss."""
    rows = table_rows()
    assert len(rows) == 6
    every = {
        p
        for p in glob.glob(
            osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
        if '_base_' not in p
    }
    listed = [p for row in rows for p in row[1]]
    assert sorted(listed) == sorted(every)  # each once, none left out
    for name, paths, normaliser, relu, box, cls in rows:
        assert paths, name
        for path in paths:
            model = Config.fromfile(path).model
            head = model.bbox_head
            where = osp.relpath(path, ROOT)
            assert head.type == 'FocalRetinaHead', where
            assert f'`{head.normalizer}`' == normaliser, where
            assert model.neck.get('relu_before_extra_convs',
                                  False) == (relu == 'yes'), where
            assert (head.loss_bbox.type,
                    head.loss_bbox.get('beta')) == BOX_LOSSES[box], where
            assert cls.startswith(f'`{head.loss_cls.type}`'), where


def test_early_stopping_option_builds():
    """The docs' EarlyStoppingHook line, added to a variant, is mmengine's
    hook with the AP as its monitor."""
    from mmengine.registry import HOOKS
    hook = HOOKS.build(
        dict(
            type='EarlyStoppingHook',
            monitor='coco/bbox_mAP',
            rule='greater',
            patience=3,
            min_delta=0.002))
    assert type(hook).__name__ == 'EarlyStoppingHook'
    assert hook.patience == 3
