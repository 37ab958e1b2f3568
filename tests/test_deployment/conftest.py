"""Tiny detectors and their ONNX exports, built once per test session.

No pretrained weights exist here: the models are randomly initialised
(``init_cfg=None``), then the classification bias is set to 0 so that
scores spread around 0.5 and many candidates survive ``score_thr`` (with
the prior's -4.6 nothing would, and every comparison would be of empty
outputs). The PyTorch model itself is the reference of every test.
"""
import os.path as osp
from types import SimpleNamespace
from typing import Tuple

import pytest
import torch

from tests.conftest import ROOT

DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py')
R50_CONFIG = osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py')


def build(config: str,
          seed: int = 0,
          r50_tiny: bool = False,
          cls_bias: float = 0.0) -> Tuple[torch.nn.Module, object, list]:
    """(model in eval mode, config, class names) of a shipped config."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    from projects.focal_retina.deployment.export import build_detector
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None  # no pretrained weights here
    if r50_tiny:
        # ResNet-50's blocks and strides at 1/4 of its width.
        cfg.model.backbone.update(base_channels=16, stem_channels=16)
        cfg.model.neck.update(in_channels=[64, 128, 256, 512], out_channels=32)
        cfg.model.bbox_head.update(
            in_channels=32, feat_channels=32, stacked_convs=2)
    MMLogger.get_current_instance().setLevel('ERROR')
    torch.manual_seed(seed)
    model, classes = build_detector(cfg)
    model.init_weights()
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(cls_bias)
        model.bbox_head.retina_reg.weight.mul_(10)
    return model.eval(), cfg, classes


def export(tmp_path_factory, name: str, model, cfg, classes, **kwargs) -> str:
    from projects.focal_retina.deployment.export import export_onnx
    out = str(tmp_path_factory.mktemp('onnx') / f'{name}.onnx')
    export_onnx(model, cfg, classes, out, **kwargs)
    return out


@pytest.fixture(scope='session')
def demo(tmp_path_factory) -> SimpleNamespace:
    """The demo model and its default (raw-output) export."""
    pytest.importorskip('onnxruntime')
    model, cfg, classes = build(DEMO_CONFIG)
    path = export(tmp_path_factory, 'demo', model, cfg, classes)
    return SimpleNamespace(model=model, cfg=cfg, classes=classes, path=path)


@pytest.fixture(scope='session')
def demo_in_graph(tmp_path_factory, demo) -> SimpleNamespace:
    """The demo model exported with its post-processing in the graph."""
    path = export(
        tmp_path_factory,
        'demo_pp',
        demo.model,
        demo.cfg,
        demo.classes,
        with_postprocess=True)
    return SimpleNamespace(**dict(vars(demo), path=path))


@pytest.fixture(scope='session')
def r50_tiny(tmp_path_factory) -> SimpleNamespace:
    """A quarter-width R-50-FPN RetinaNet (80 classes) and its export."""
    pytest.importorskip('onnxruntime')
    model, cfg, classes = build(R50_CONFIG, seed=1, r50_tiny=True)
    path = export(tmp_path_factory, 'r50', model, cfg, classes)
    return SimpleNamespace(model=model, cfg=cfg, classes=classes, path=path)
