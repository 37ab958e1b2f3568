"""The paper's backbone switch and the Table 2 ResNeXt model.

The ``_caffe`` configs take MSRA's ResNets as the paper does (He et al.,
released with Detectron): the stride in a bottleneck's first 1x1 conv, batch
norm frozen (statistics and affine), BGR input in 0-255 with the mean
subtracted and no std division; and MSRA's weights in the file format mmdet
converted them to (``open-mmlab://detectron2/resnet50_caffe``) load into
every backbone tensor. The ResNeXt-101-64x4d config builds mmdet's ResNeXt
with 64 groups of width 4.

Expectations are typed from Detectron / detectron2 and torchvision's
published parameter counts, not from the configs; the MSRA stand-in is
written in Detectron's blob names and converted by mmdet's own converter
(``tools/model_converters/detectron2pytorch.py``), or saved as the plain
state dict that converter produces. Nothing is downloaded: the stand-in is
put where the loader looks first (torch's hub cache).
"""
import glob
import importlib.util
import os.path as osp
import pickle
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch
import yaml
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.runner import checkpoint as mm_ckpt

from projects.focal_retina.utils.paper_settings import (load_table,
                                                        resolve_settings)
from tests.conftest import ROOT

register_all_modules()
MMDET_MIM = osp.join(osp.dirname(__import__('mmdet').__file__), '.mim')
CAFFE = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*_caffe.py'),
                       recursive=True) if '_base_' not in p)
X101 = 'configs/retina_x101-64x4d_fpn_1.5x.py'
ROWS = load_table()
# Detectron's PIXEL_MEANS (BGR) for MSRA's ResNets; detectron2 and mmdet
# use [103.530, 116.280, 123.675] with the same weights.
DETECTRON_MEAN = [102.9801, 115.9465, 122.7717]
# The file names of mmengine's model zoo for these names.
ZOO_FILES = {
    'detectron2/resnet50_caffe': 'resnet50_msra-5891d200.pth',
    'detectron2/resnet101_caffe': 'resnet101_msra-6cc46731.pth',
    'resnext101_64x4d': 'resnext101_64x4d-ee2c6f71.pth',
}


def test_every_table1e_and_table2_resnet_cell_has_a_caffe_twin():
    """The 10 cells of Table 1e's depth x scale grid and Table 2's R-101
    model each have a _caffe config, which states the same settings but
    the backbone's."""
    backbone = ('backbone', 'style', 'bn', 'weights', 'channels',
                'pixel_mean', 'pixel_std')
    twins = {}
    for row in ROWS:
        if row['table'] in ('Table 1e', 'Table 2') and \
                row['backbone'] == 'ResNet':
            key = (row['table'], row['row'].split(', MSRA')[0])
            twins.setdefault(key, []).append(row)
    assert len(twins) == 11
    for key, rows in twins.items():
        assert sorted(r['style'] for r in rows) == ['caffe', 'pytorch'], key
        a, b = rows
        assert a['paper_ap'] == b['paper_ap'], key
        same = {k for k in a if a[k] == b[k]}
        assert set(a) - same <= {'config', 'row'} | set(backbone), key
    assert sorted(r['config'] for rows in twins.values() for r in rows
                  if r['style'] == 'caffe') == CAFFE


@pytest.mark.parametrize('config', CAFFE)
def test_caffe_config_takes_the_papers_backbone(config):
    """Resolved, the settings table's row and the config itself: MSRA's
    caffe-style ResNet, frozen BN, BGR minus the mean, std 1."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    resolved = resolve_settings(cfg)
    row = next(r for r in ROWS if r['config'] == config)
    depth = row['depth']
    expected = dict(
        backbone='ResNet',
        style='caffe',
        bn='frozen',
        weights=f'open-mmlab://detectron2/resnet{depth}_caffe',
        channels='BGR',
        pixel_std='1;1;1')
    for key, value in expected.items():
        assert resolved[key] == row[key] == value, key
    mean = [float(v) for v in resolved['pixel_mean'].split(';')]
    assert np.abs(np.subtract(mean, DETECTRON_MEAN)).max() < 1.0
    # the same, read off the config without the resolver
    bb, pre = cfg.model.backbone, cfg.model.data_preprocessor
    assert (bb.type, bb.style, bb.norm_cfg.requires_grad, bb.norm_eval) == (
        'ResNet', 'caffe', False, True)
    assert (pre.bgr_to_rgb, pre.std) == (False, [1.0, 1.0, 1.0])
    assert pre.mean == [103.530, 116.280, 123.675]  # mmdet's caffe configs


def test_switch_is_mmdets_caffe_setting():
    """The switch sets what mmdet's retinanet_r50-caffe config sets on its
    backbone and data preprocessor, nothing else."""
    ours = Config.fromfile(
        osp.join(ROOT, 'configs/retina_r50_fpn_1x_caffe.py'))
    plain = Config.fromfile(osp.join(ROOT, 'configs/retina_r50_fpn_1x.py'))
    mmdet = Config.fromfile(
        osp.join(MMDET_MIM, 'configs/retinanet/'
                 'retinanet_r50-caffe_fpn_1x_coco.py'))
    assert ours.model.backbone.to_dict() == mmdet.model.backbone.to_dict()
    assert ours.model.data_preprocessor.to_dict() == \
        mmdet.model.data_preprocessor.to_dict()
    for key in plain.model:
        if key not in ('backbone', 'data_preprocessor'):
            assert ours.model[key] == plain.model[key], key
    for key in plain:
        if key != 'model':
            assert ours[key] == plain[key], key


def test_zoo_names_resolve_to_mmengines_files():
    urls = mm_ckpt.get_external_models()
    for name, file in ZOO_FILES.items():
        assert urls[name].endswith('/' + file), name


# ---------------------------------------------------------------------------
# MSRA's weights in mmdet's format. Detectron's ImageNet file holds blobs
# named conv1_w, res_conv1_bn_{s,b}, res<stage>_<block>_branch1_w (the
# projection), res<stage>_<block>_branch2{a,b,c}_w (1x1, 3x3, 1x1) with
# their _bn_{s,b} (AffineChannel: scale and bias only), and the classifier
# pred_{w,b}; mmdet's converter renames them to torch's ResNet names.

def detectron_resnet_blobs(depth: int, seed: int = 0) -> dict:
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    rng = np.random.default_rng(seed)
    blobs = {}

    def conv(name, c_out, c_in, k):
        blobs[f'{name}_w'] = rng.standard_normal(
            (c_out, c_in, k, k)).astype(np.float32)

    def affine(name, c):
        blobs[f'{name}_s'] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        blobs[f'{name}_b'] = rng.standard_normal(c).astype(np.float32)

    conv('conv1', 64, 3, 7)
    affine('res_conv1_bn', 64)
    in_c = 64
    for stage, num in enumerate(blocks):
        planes = 64 * 2**stage
        for j in range(num):
            p = f'res{stage + 2}_{j}'
            if j == 0:
                conv(f'{p}_branch1', planes * 4, in_c, 1)
                affine(f'{p}_branch1_bn', planes * 4)
            conv(f'{p}_branch2a', planes, in_c, 1)
            affine(f'{p}_branch2a_bn', planes)
            conv(f'{p}_branch2b', planes, planes, 3)
            affine(f'{p}_branch2b_bn', planes)
            conv(f'{p}_branch2c', planes * 4, planes, 1)
            affine(f'{p}_branch2c_bn', planes * 4)
            in_c = planes * 4
    blobs['pred_w'] = rng.standard_normal((1000, 2048)).astype(np.float32)
    blobs['pred_b'] = rng.standard_normal(1000).astype(np.float32)
    return blobs


def mmdet_converter():
    path = osp.join(MMDET_MIM, 'tools', 'model_converters',
                    'detectron2pytorch.py')
    spec = importlib.util.spec_from_file_location('detectron2pytorch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch home; the hub cache is <home>/hub/checkpoints."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    return cache


def msra_stand_in(tmp_path, cache, depth, layout) -> OrderedDict:
    """MSRA's ResNet converted by mmdet's converter, at the cache path of
    open-mmlab://detectron2/resnet<depth>_caffe; returns its state dict."""
    src = tmp_path / f'R-{depth}.pkl'
    with open(src, 'wb') as f:
        pickle.dump(detectron_resnet_blobs(depth), f)
    converted = tmp_path / 'converted.pth'
    mmdet_converter().convert(str(src), str(converted), depth)
    state = torch.load(str(converted))['state_dict']
    dst = cache / ZOO_FILES[f'detectron2/resnet{depth}_caffe']
    if layout == 'plain':  # a bare state dict, no 'state_dict' key
        torch.save(state, str(dst))
    else:
        converted.rename(dst)
    return state


@pytest.mark.parametrize('layout', ['converter', 'plain'])
def test_msra_weights_load_into_every_backbone_tensor(tmp_path, torch_home,
                                                      layout):
    """init_cfg Pretrained open-mmlab://detectron2/resnet50_caffe: every
    tensor of the file goes into the backbone and every backbone tensor
    comes from the file (the classifier pred_* is not converted)."""
    state = msra_stand_in(tmp_path, torch_home, 50, layout)
    assert 'conv1.weight' in state and 'layer1.0.downsample.0.weight' in \
        state and 'fc.weight' not in state
    # 53 conv/downsample weights, 53 BNs of 4 tensors
    assert len(state) == 53 + 53 * 4
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/ablations/table1e_depth_scale/'
                 'retina_r50_fpn_400_1x_caffe.py'))
    model = MODELS.build(cfg.model.backbone)
    model.init_weights()
    own = {
        k: v
        for k, v in model.state_dict().items()
        if not k.endswith('num_batches_tracked')
    }
    assert sorted(own) == sorted(state)  # nothing missing or unexpected
    for key, value in state.items():
        torch.testing.assert_close(own[key], value, msg=key)


def test_msra_r101_file_has_the_keys_of_the_r101_configs(tmp_path):
    """The R-101 configs' backbone has exactly the converted R-101 file's
    tensors, shape for shape (built without weights: no init needed)."""
    blobs = detectron_resnet_blobs(101)
    src = tmp_path / 'R-101.pkl'
    with open(src, 'wb') as f:
        pickle.dump(blobs, f)
    mmdet_converter().convert(str(src), str(tmp_path / 'r101.pth'), 101)
    state = torch.load(str(tmp_path / 'r101.pth'))['state_dict']
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/retina_r101_fpn_1.5x_caffe.py'))
    cfg.model.backbone.init_cfg = None
    backbone = MODELS.build(cfg.model.backbone)
    own = {
        k: tuple(v.shape)
        for k, v in backbone.state_dict().items()
        if not k.endswith('num_batches_tracked')
    }
    assert own == {k: tuple(v.shape) for k, v in state.items()}


def test_caffe_backbone_behaves_as_msras():
    """Stride in the first 1x1 conv; BN statistics and affine stay as
    loaded in training mode; the input is BGR minus the mean."""
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/retina_r50_fpn_1x_caffe.py'))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    bb = model.backbone
    block = bb.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(p.requires_grad for m in bns
                           for p in m.parameters())
    before = [m.running_mean.clone() for m in bns]
    model.train()
    assert not any(m.training for m in bns)
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    img[0], img[1], img[2] = 10, 20, 30  # as read: B, G, R
    data = model.data_preprocessor(
        dict(inputs=[img], data_samples=None), False)
    x = data['inputs'][0]
    torch.testing.assert_close(x[:, 0, 0],
                               torch.tensor([10 - 103.53, 20 - 116.28,
                                             30 - 123.675]))
    with torch.no_grad():
        bb(data['inputs'])
    for m, b in zip(bns, before):
        torch.testing.assert_close(m.running_mean, b)


# ---------------------------------------------------------------------------
# Table 2's ResNeXt-101-64x4d model.

def test_x101_config_builds_resnext_64x4d():
    """mmdet's ResNeXt, 64 groups of width 4: torchvision's
    resnext101_64x4d has 83,455,272 parameters with its 1000-class fc
    (2048 x 1000 + 1000); the config's backbone has the rest, and the keys
    and shapes of mmdet's own retinanet_x101-64x4d model."""
    cfg = Config.fromfile(osp.join(ROOT, X101))
    cfg.model.backbone.init_cfg = None
    bb = cfg.model.backbone
    assert (bb.type, bb.depth, bb.groups,
            bb.base_width) == ('ResNeXt', 101, 64, 4)
    model = MODELS.build(cfg.model)
    params = sum(p.numel() for p in model.backbone.parameters())
    assert params == 83455272 - (2048 * 1000 + 1000)
    theirs = Config.fromfile(
        osp.join(MMDET_MIM,
                 'configs/retinanet/retinanet_x101-64x4d_fpn_1x_coco.py'))
    theirs.model.backbone.init_cfg = None
    mmdet_bb = MODELS.build(theirs.model.backbone)
    assert {k: v.shape for k, v in model.backbone.state_dict().items()} == \
        {k: v.shape for k, v in mmdet_bb.state_dict().items()}
    # the second block's grouped 3x3: 64 groups of 4 channels (stage 1)
    conv2 = model.backbone.layer1[0].conv2
    assert (conv2.groups, conv2.in_channels) == (64, 256)
    model.eval()
    with torch.no_grad():
        cls_scores, _ = model(torch.zeros(1, 3, 64, 64), mode='tensor')
    assert [c.shape[-1] for c in cls_scores] == [8, 4, 2, 1, 1]


def test_x101_row_and_init():
    cfg = Config.fromfile(osp.join(ROOT, X101))
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')
    row = next(r for r in ROWS if r['config'] == X101)
    assert (row['table'], row['paper_ap'],
            row['split']) == ('Table 2', '40.8', 'test-dev')
    resolved = resolve_settings(cfg)
    assert resolved['backbone'] == 'ResNeXt 64x4d'
    # otherwise Table 2's R-101 model: 800 px, jitter 640-800, 1.5x
    assert (resolved['train_scale'], resolved['test_scale'],
            resolved['iters'], resolved['lr_steps']) == ('640-800', '800',
                                                         '135000',
                                                         '90000;120000')


def test_docs_quote_mmdets_published_ap():
    """docs/paper_reproduction.md's torchvision-vs-caffe table quotes the
    box AP of mmdet's metafile for each pair of its configs."""
    with open(osp.join(MMDET_MIM, 'configs/retinanet/metafile.yml')) as f:
        models = yaml.safe_load(f)['Models']
    ap = {
        m['Name']: m['Results'][0]['Metrics']['box AP']
        for m in models
    }
    with open(osp.join(ROOT, 'docs', 'paper_reproduction.md')) as f:
        text = f.read()
    rows = re.findall(
        r'^\s*\| `(\w+)` / `([\w-]+)` \| ([\d.]+) \| ([\d.]+) \|$', text,
        re.M)
    assert len(rows) == 2
    for plain, caffe, ap_plain, ap_caffe in rows:
        assert '-caffe' in caffe and '-caffe' not in plain
        assert (float(ap_plain), float(ap_caffe)) == (ap[plain], ap[caffe])
