"""The tools with published weights, offline: ``tools/infer.py`` and
``tools/test.py`` take a URL as the checkpoint (a file put by hand at
torch's cache path is used), and an unreachable URL stops with one line
naming the URL and that path — no traceback. Nothing touches the network:
the URLs point at a closed port on localhost."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.test_engine.test_offline_weights import (closed_port_url,
                                                    zoo_checkpoint)

R18 = 'configs/pretrained/retinanet_r18_fpn_1x_coco.py'
NAME = 'retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth'


def run(args, torch_home, cwd=ROOT):
    env = dict(os.environ, TORCH_HOME=str(torch_home), CUDA_VISIBLE_DEVICES='')
    return subprocess.run([sys.executable] + args,
                          cwd=cwd,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)


@pytest.fixture
def photo(tmp_path):
    path = str(tmp_path / 'photo.jpg')
    img = np.full((96, 128, 3), 127, np.uint8)
    cv2.rectangle(img, (30, 20), (90, 70), (20, 200, 40), -1)
    cv2.imwrite(path, img)
    return path


@pytest.mark.slow
def test_infer_with_an_unreachable_url_is_one_line(tmp_path, photo):
    url = closed_port_url(NAME)
    out = run(['tools/infer.py', R18, url, photo, '--out-dir',
               str(tmp_path / 'out')], tmp_path / 'torch')
    assert out.returncode == 2, out.stderr[-3000:]
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if 'error:' in ln]
    assert len(errors) == 1, out.stderr[-3000:]
    cache = osp.join(str(tmp_path / 'torch'), 'hub', 'checkpoints', NAME)
    assert url in errors[0] and cache in errors[0], errors[0]


@pytest.mark.slow
def test_infer_takes_the_url_from_the_cache(tmp_path, photo):
    """The file copied by hand to the cache path of the URL: infer.py runs
    the model with its 80 COCO class names (mmdet's model-zoo layout,
    legacy serialization)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile(
        osp.join(
            osp.dirname(__import__('mmdet').__file__), '.mim', 'configs',
            'retinanet', 'retinanet_r18_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    torch.save(
        zoo_checkpoint(cfg, model.state_dict()),
        str(cache / NAME),
        _use_new_zipfile_serialization=False)
    url = closed_port_url(NAME)
    out = run([
        'tools/infer.py', R18, url, photo, '--out-dir',
        str(tmp_path / 'out'), '--score-thr', '0.0', '--classes', 'person',
        'chair'
    ], tmp_path / 'torch')
    assert out.returncode == 0, out.stderr[-3000:]
    assert osp.isfile(tmp_path / 'out' / 'detections.json')
    # Only person and chair are listed (the model's COCO names).
    listed = [ln.split()[0] for ln in out.stdout.splitlines()
              if ln.startswith('  ')]
    assert set(listed) <= {'person', 'chair'}


def tool_error(checkpoint, tmp_path, shapes) -> str:
    """tools/test.py on the demo config and ``shapes``: its one error line
    (exit status 2, no traceback)."""
    out = run([
        'tools/test.py', 'configs/demo/retina_r18_fpn_shapes.py', checkpoint,
        '--work-dir',
        str(tmp_path / 'w'), '--cfg-options',
        f'test_dataloader.dataset.data_root={shapes}/',
        f'test_evaluator.ann_file={shapes}/annotations/val.json'
    ], tmp_path / 'torch')
    assert out.returncode == 2, out.stderr[-3000:]
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if 'error:' in ln]
    assert len(errors) == 1, out.stderr[-3000:]
    return errors[0]


@pytest.mark.slow
def test_test_tool_with_an_unreachable_url_is_one_line(tmp_path, tiny_shapes):
    url = closed_port_url(NAME)
    assert url in tool_error(url, tmp_path, tiny_shapes)


@pytest.mark.slow
def test_test_tool_refuses_another_architecture_in_one_line(
        tmp_path, tiny_shapes):
    """mmdet's R-18 COCO stand-in evaluated with the demo config (another
    architecture): mmengine would load what matches and evaluate the rest
    at random; the tool refuses it in one line."""
    ckpt = tmp_path / 'other.pth'
    torch.save(
        dict(state_dict={
            'backbone.conv1.weight': torch.zeros(64, 3, 7, 7),
            'neck.lateral_convs.0.conv.weight': torch.zeros(256, 128, 1, 1)
        }), str(ckpt))
    error = tool_error(str(ckpt), tmp_path, tiny_shapes)
    assert 'does not fit the model' in error
    assert 'another architecture' in error


@pytest.mark.slow
def test_infer_refuses_another_architecture_in_one_line(tmp_path, photo):
    """mmdet's DetInferencer loads what matches and only warns; infer.py
    refuses a checkpoint that does not fit its config."""
    ckpt = tmp_path / 'other.pth'
    torch.save(
        dict(state_dict={'backbone.conv1.weight': torch.zeros(64, 3, 7, 7)}),
        str(ckpt))
    out = run([
        'tools/infer.py', 'configs/demo/retina_r18_fpn_shapes.py',
        str(ckpt), photo, '--out-dir',
        str(tmp_path / 'out')
    ], tmp_path / 'torch')
    assert out.returncode == 2, out.stderr[-3000:]
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if 'error:' in ln]
    assert len(errors) == 1 and 'does not fit the model' in errors[0], \
        out.stderr[-3000:]
