"""Published weights without a network: stand-in files in the exact layout
of torchvision's ResNet state dict and of mmdet's model-zoo RetinaNet
checkpoint load through our safe loader on every path a user takes
(``load_from`` to test or to fine-tune, ``init_cfg`` Pretrained, mmdet's
``DetInferencer`` as ``tools/infer.py`` runs it), from the cache file torch
and mmengine look in; an unreachable URL gives one line saying what to do;
a stand-in carrying a pickle payload is refused.

The stand-ins are built independently of the code under test: the
torchvision layout from torchvision's ResNet definition (key names and
shapes written out here), the model-zoo one from mmdet's own RetinaNet
config, saved as mmdet's ``publish_model`` saves (legacy serialization).
No test touches the network: URLs point at a closed port on localhost.
"""
import math
import os
import os.path as osp
import socket
from collections import OrderedDict

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.runner import BaseLoop, Runner
from mmengine.runner import checkpoint as mm_ckpt
from mmengine.runner.checkpoint import CheckpointLoader

from projects.focal_retina.engine import UntrustedCheckpointError
from projects.focal_retina.engine.checkpoint import (
    CheckpointUnavailableError, torchvision_urls)
from projects.focal_retina.engine.hooks import CheckpointMismatchError
from tests.conftest import ROOT

register_all_modules()
MMDET_CONFIGS = osp.join(
    osp.dirname(__import__('mmdet').__file__), '.mim', 'configs')
R18_CONFIG = osp.join(ROOT, 'configs', 'pretrained',
                      'retinanet_r18_fpn_1x_coco.py')
R18_FILE = 'retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth'
COCO_FINE_TUNE = osp.join(ROOT, 'configs', 'own_data',
                          'retinanet_r18_fpn_own_data_coco.py')
IMAGENET_R18 = osp.join(ROOT, 'configs', 'own_data',
                        'retina_r18_fpn_own_data_imagenet.py')


def closed_port_url(name: str) -> str:
    """A URL on localhost that refuses connections (nothing listens)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/{name}'


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch home; the hub cache is <home>/hub/checkpoints."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    return cache


# ---------------------------------------------------------------------------
# Stand-in (i): torchvision's ResNet state dict, as torchvision.models.resnet
# defines it (conv1/bn1, layer1-4 of BasicBlock or Bottleneck with
# downsample.0/.1 where the shape changes, fc to 1000 classes) and as its
# released files hold it (no num_batches_tracked; legacy serialization).


def torchvision_resnet_state(depth: int, seed: int = 0) -> OrderedDict:
    blocks = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
    expansion = 1 if depth < 50 else 4
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()

    def conv(name, c_out, c_in, k):
        state[f'{name}.weight'] = torch.randn(c_out, c_in, k, k, generator=g)

    def bn(name, c):
        state[f'{name}.running_mean'] = torch.randn(c, generator=g)
        state[f'{name}.running_var'] = torch.rand(c, generator=g) + 0.5
        state[f'{name}.weight'] = torch.rand(c, generator=g) + 0.5
        state[f'{name}.bias'] = torch.randn(c, generator=g)

    conv('conv1', 64, 3, 7)
    bn('bn1', 64)
    in_planes = 64
    for stage, num in enumerate(blocks):
        planes = 64 * 2**stage
        for i in range(num):
            p = f'layer{stage + 1}.{i}'
            if expansion == 1:
                conv(f'{p}.conv1', planes, in_planes, 3)
                bn(f'{p}.bn1', planes)
                conv(f'{p}.conv2', planes, planes, 3)
                bn(f'{p}.bn2', planes)
            else:
                conv(f'{p}.conv1', planes, in_planes, 1)
                bn(f'{p}.bn1', planes)
                conv(f'{p}.conv2', planes, planes, 3)
                bn(f'{p}.bn2', planes)
                conv(f'{p}.conv3', planes * 4, planes, 1)
                bn(f'{p}.bn3', planes * 4)
            stride = 2 if stage > 0 and i == 0 else 1
            if i == 0 and (stride != 1 or in_planes != planes * expansion):
                conv(f'{p}.downsample.0', planes * expansion, in_planes, 1)
                bn(f'{p}.downsample.1', planes * expansion)
            in_planes = planes * expansion
    state['fc.weight'] = torch.randn(1000, in_planes, generator=g)
    state['fc.bias'] = torch.randn(1000, generator=g)
    return state


def test_torchvision_layout_is_resnet18():
    """The stand-in has the size of torchvision's resnet18: 11,689,512
    parameters (its documented count), 102 tensors (62 parameters and 40
    BatchNorm statistics)."""
    state = torchvision_resnet_state(18)
    stats = [k for k in state if 'running' in k]
    params = sum(v.numel() for k, v in state.items() if 'running' not in k)
    assert params == 11689512
    assert (len(state), len(stats)) == (102, 40)


def test_torchvision_names_resolve_without_torchvision():
    """mmengine's table imports torchvision (not installable here); the
    names resolve from mmengine's copy of torchvision's URLs."""
    urls = torchvision_urls()
    assert urls['resnet18'].endswith('/resnet18-f37072fd.pth')
    assert urls['resnet50'].endswith('/resnet50-0676ba61.pth')


def test_imagenet_backbone_loads_from_the_cache(torch_home):
    """init_cfg Pretrained torchvision://resnet18: the stand-in put where
    torch looks loads into every backbone weight; fc (the ImageNet
    classifier) is skipped."""
    state = torchvision_resnet_state(18)
    name = osp.basename(torchvision_urls()['resnet18'])
    torch.save(
        state, str(torch_home / name), _use_new_zipfile_serialization=False)
    cfg = Config.fromfile(IMAGENET_R18)
    assert cfg.model.backbone.init_cfg.checkpoint == 'torchvision://resnet18'
    model = MODELS.build(cfg.model)
    model.init_weights()
    own = model.backbone.state_dict()
    loaded = [k for k in state if k in own]
    assert sorted(set(state) - set(loaded)) == ['fc.bias', 'fc.weight']
    assert len(loaded) == 100
    for key in loaded:
        torch.testing.assert_close(own[key], state[key], msg=key)


def test_imagenet_backbone_offline_is_one_line(torch_home, monkeypatch):
    url = closed_port_url('resnet18-f37072fd.pth')
    monkeypatch.setattr(mm_ckpt, 'get_torchvision_models',
                        lambda: {'resnet18': url})
    cfg = Config.fromfile(IMAGENET_R18)
    model = MODELS.build(cfg.model)
    with pytest.raises(CheckpointUnavailableError) as err:
        model.init_weights()
    msg = str(err.value)
    assert '\n' not in msg
    assert 'torchvision://resnet18' in msg and url in msg
    assert str(torch_home / 'resnet18-f37072fd.pth') in msg
    assert 'model.backbone.init_cfg=None' in msg


def test_unknown_torchvision_name_is_named():
    with pytest.raises(CheckpointUnavailableError, match='resnet18'):
        CheckpointLoader.load_checkpoint('torchvision://resnet181')


# ---------------------------------------------------------------------------
# Stand-in (ii): mmdet's model-zoo RetinaNet R-18 checkpoint: the state
# dict of mmdet's own config, meta with the config text and the class
# names, saved as mmdet's publish_model.py does (no optimizer, legacy
# serialization).


@pytest.fixture(scope='module')
def mmdet_r18():
    """mmdet's own RetinaNet R-18 (its config, not ours), random weights."""
    cfg = Config.fromfile(
        osp.join(MMDET_CONFIGS, 'retinanet', 'retinanet_r18_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():  # not the values a fresh model has
            p.add_(torch.randn_like(p) * 0.01)
    return cfg, model.state_dict()


def zoo_checkpoint(cfg, state, layout='3.x', extra=None) -> dict:
    from mmdet.datasets import CocoDataset
    classes = CocoDataset.METAINFO['classes']
    meta = dict(
        mmdet_version='3.3.0' if layout == '3.x' else '2.23.0',
        config=cfg.pretty_text,
        epoch=12,
        iter=87960)
    if layout == '3.x':
        meta['dataset_meta'] = dict(
            classes=classes, palette=CocoDataset.METAINFO['palette'])
    else:
        meta['CLASSES'] = classes
    if extra:
        meta.update(extra)
    return dict(meta=meta, state_dict=OrderedDict(state))


def cache_stand_in(mmdet_r18, torch_home, layout='3.x'):
    """The stand-in at the cache path of the pretrained config's URL."""
    cfg, state = mmdet_r18
    path = torch_home / R18_FILE
    torch.save(
        zoo_checkpoint(cfg, state, layout),
        str(path),
        _use_new_zipfile_serialization=False)
    return path, state


@pytest.fixture
def cached_r18(mmdet_r18, torch_home):
    return cache_stand_in(mmdet_r18, torch_home)


@pytest.fixture(params=['3.x', '2.x'])
def cached_r18_any_meta(request, mmdet_r18, torch_home):
    """Class names in mmdet 3's meta['dataset_meta'] or 2's
    meta['CLASSES'] (the released 2020 files)."""
    return cache_stand_in(mmdet_r18, torch_home, request.param)


def pretrained_runner(tmp_path, load_from, training=False, cfg_path=None):
    cfg = Config.fromfile(cfg_path or R18_CONFIG)
    runner = Runner(
        model=cfg.model,
        work_dir=str(tmp_path / 'work'),
        load_from=load_from,
        default_scope='mmdet',
        custom_hooks=[
            dict(
                type='CheckpointCompatibilityHook',
                allow_mismatch=['bbox_head.retina_cls'])
        ],
        experiment_name=f'offline_{tmp_path.name}_{training}')
    if training:  # as while training: the hook's opt-in holds

        class Loop(BaseLoop):

            def run(self):
                pass

        runner._train_loop = Loop(runner, [])
    return runner, cfg


def test_url_of_the_config_loads_from_the_cache(cached_r18, tmp_path):
    """tools/test.py's path (load_from = the config's URL): every key of
    the stand-in loads, nothing is skipped."""
    path, state = cached_r18
    runner, cfg = pretrained_runner(tmp_path, None)
    assert cfg.load_from.endswith('/' + R18_FILE)
    runner._load_from = cfg.load_from
    runner.load_or_resume()
    own = runner.model.state_dict()
    assert set(own) == set(state)
    for key in state:
        torch.testing.assert_close(own[key], state[key], msg=key)
    hook = [
        h for h in runner.hooks
        if type(h).__name__ == 'CheckpointCompatibilityHook'
    ][0]
    assert hook.skipped == []


def test_local_path_loads_the_same(cached_r18, tmp_path):
    path, state = cached_r18
    runner, _ = pretrained_runner(tmp_path, str(path))
    runner.load_or_resume()
    torch.testing.assert_close(runner.model.state_dict(), dict(state))


def test_fine_tune_loads_all_but_the_classifier(cached_r18, tmp_path):
    """load_from into the own-data COCO recipe (1 class): every key but
    retina_cls loads; retina_cls keeps the prior bias -log((1-0.01)/0.01)
    and is listed as skipped."""
    path, state = cached_r18
    runner, cfg = pretrained_runner(
        tmp_path, None, training=True, cfg_path=COCO_FINE_TUNE)
    assert cfg.model.backbone.init_cfg is None
    runner._load_from = cfg.load_from
    runner.model.init_weights()
    runner.load_or_resume()
    hook = [
        h for h in runner.hooks
        if type(h).__name__ == 'CheckpointCompatibilityHook'
    ][0]
    assert hook.skipped == [
        'bbox_head.retina_cls.bias', 'bbox_head.retina_cls.weight'
    ]
    own = runner.model.state_dict()
    assert own['bbox_head.retina_cls.weight'].shape == (9, 256, 3, 3)
    torch.testing.assert_close(own['bbox_head.retina_cls.bias'],
                               torch.full((9, ), -math.log(99)))
    loaded = [k for k in state if 'retina_cls' not in k]
    assert len(loaded) == len(state) - 2
    for key in loaded:
        torch.testing.assert_close(own[key], state[key], msg=key)


def test_inferencer_gets_weights_and_class_names(cached_r18_any_meta):
    """tools/infer.py's DetInferencer with the URL: weights from the cache,
    the 80 COCO class names from the checkpoint's meta (either layout)."""
    from mmdet.apis import DetInferencer
    path, state = cached_r18_any_meta
    cfg = Config.fromfile(R18_CONFIG)
    inferencer = DetInferencer(
        model=cfg, weights=cfg.load_from, device='cpu', show_progress=False)
    classes = inferencer.model.dataset_meta['classes']
    assert len(classes) == 80 and classes[:2] == ('person', 'bicycle')
    assert 'chair' in classes
    torch.testing.assert_close(
        inferencer.model.state_dict()['bbox_head.retina_reg.weight'],
        state['bbox_head.retina_reg.weight'])


def test_other_architecture_is_refused(torch_home, tmp_path):
    """An ImageNet ResNet as load_from of the detector: refused with the
    report, not loaded half-way."""
    path = str(torch_home / 'resnet18.pth')
    torch.save(torchvision_resnet_state(18), path)
    runner, _ = pretrained_runner(tmp_path, path)
    with pytest.raises(CheckpointMismatchError, match='another architecture'):
        runner.load_or_resume()


# ---------------------------------------------------------------------------
# Offline: one line, on every path.


def assert_offline_line(msg: str, url: str, cached: str) -> None:
    assert '\n' not in msg and 'Traceback' not in msg
    assert url in msg  # the URL
    assert cached in msg  # where to put the file by hand
    assert 'load_from' in msg  # or a local path
    assert 'from scratch' in msg  # or without the weights


def test_unreachable_url_through_the_loader(torch_home):
    url = closed_port_url(R18_FILE)
    with pytest.raises(CheckpointUnavailableError) as err:
        CheckpointLoader.load_checkpoint(url, map_location='cpu')
    assert_offline_line(str(err.value), url, str(torch_home / R18_FILE))
    assert not os.listdir(torch_home)  # no partial file left


def test_unreachable_load_from_through_the_runner(torch_home, tmp_path):
    url = closed_port_url(R18_FILE)
    runner, _ = pretrained_runner(tmp_path, url)
    with pytest.raises(CheckpointUnavailableError) as err:
        runner.load_or_resume()
    assert_offline_line(str(err.value), url, str(torch_home / R18_FILE))


def test_unreachable_url_through_the_inferencer(torch_home):
    from mmdet.apis import DetInferencer
    url = closed_port_url(R18_FILE)
    with pytest.raises(CheckpointUnavailableError) as err:
        DetInferencer(
            model=Config.fromfile(R18_CONFIG),
            weights=url,
            device='cpu',
            show_progress=False)
    assert_offline_line(str(err.value), url, str(torch_home / R18_FILE))


# ---------------------------------------------------------------------------
# The attacker's path: a "model-zoo" file with a payload in its meta.


class Payload:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.mark.parametrize('where', ['cache', 'local'])
def test_payload_in_a_zoo_checkpoint_is_refused(mmdet_r18, torch_home,
                                                tmp_path, where):
    cfg, state = mmdet_r18
    marker = tmp_path / 'marker'
    path = (torch_home / R18_FILE) if where == 'cache' else (tmp_path /
                                                             'evil.pth')
    torch.save(
        zoo_checkpoint(cfg, state, extra=dict(env_info=Payload(marker))),
        str(path),
        _use_new_zipfile_serialization=False)
    source = Config.fromfile(R18_CONFIG).load_from if where == 'cache' \
        else str(path)
    with pytest.raises(UntrustedCheckpointError, match='system'):
        CheckpointLoader.load_checkpoint(source, map_location='cpu')
    assert not marker.exists(), 'the payload ran'
