"""``tools/infer.py`` on an ``.onnx`` file: the same printout, drawing and
JSON as on the checkpoint it was exported from (the reference: the same
tool running the PyTorch checkpoint through mmdet's DetInferencer)."""
import json
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from projects.focal_retina.deployment.parity import (detections_equal,
                                                     match_detections)
from tests.conftest import ROOT
from tests.test_deployment.conftest import DEMO_CONFIG, build

pytestmark = pytest.mark.slow
TOOL = osp.join(ROOT, 'tools', 'infer.py')


def infer(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *argv],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)


def preds(out_dir, name: str) -> dict:
    with open(osp.join(out_dir, 'preds', name + '.json')) as f:
        raw = json.load(f)
    return dict(
        bboxes=np.array(raw['bboxes'], np.float32).reshape(-1, 4),
        scores=np.array(raw['scores'], np.float32),
        labels=np.array(raw['labels'], np.int64))


def test_infer_onnx_matches_checkpoint(tmp_path):
    pytest.importorskip('onnxruntime')
    from projects.focal_retina.deployment.export import export_onnx
    model, cfg, classes = build(DEMO_CONFIG)
    ckpt = str(tmp_path / 'demo.pth')
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(dataset_meta=dict(classes=tuple(classes)))), ckpt)
    onnx_path = str(tmp_path / 'demo.onnx')
    export_onnx(model, cfg, classes, onnx_path)
    gen = np.random.default_rng(7)
    images = []
    for i, (h, w) in enumerate([(90, 120), (130, 70)]):
        images.append(str(tmp_path / f'img{i}.png'))
        cv2.imwrite(images[-1],
                    gen.integers(0, 256, (h, w, 3), dtype=np.uint8))
    ref_dir, onnx_dir = tmp_path / 'ref', tmp_path / 'onnx'
    ref = infer(DEMO_CONFIG, ckpt, *images, '--out-dir', str(ref_dir),
                '--score-thr', '0.3')
    assert ref.returncode == 0, ref.stderr[-2000:]
    # CONFIG omitted: the file's metadata carries everything.
    out = infer(onnx_path, *images, '--out-dir', str(onnx_dir), '--score-thr',
                '0.3')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'onnxruntime' in out.stdout
    for name in ('img0.png', 'img1.png'):
        stats = match_detections(preds(onnx_dir, name), preds(ref_dir, name))
        assert detections_equal(stats) and stats['count_ref'] > 20, stats
        assert osp.isfile(onnx_dir / 'vis' / name)
    with open(ref_dir / 'detections.json') as f:
        ref_records = json.load(f)
    with open(onnx_dir / 'detections.json') as f:
        records = json.load(f)
    assert len(records) == len(ref_records) > 0
    assert [r['class'] for r in records] == [r['class'] for r in ref_records]
    # --tile: the file's detections per window, merged by the same code
    for argv, out_dir in (((DEMO_CONFIG, ckpt), tmp_path / 'ref_tile'),
                          ((onnx_path, ), tmp_path / 'onnx_tile')):
        run = infer(*argv, images[0], '--out-dir', str(out_dir), '--score-thr',
                    '0.3', '--tile', '64', '--overlap', '0.25')
        assert run.returncode == 0, run.stderr[-2000:]
    stats = match_detections(
        preds(tmp_path / 'onnx_tile', 'img0.png'),
        preds(tmp_path / 'ref_tile', 'img0.png'))
    assert detections_equal(stats) and stats['count_ref'] > 20, stats
    # a config given with the file is ignored (with a note)
    out = infer(DEMO_CONFIG, onnx_path, images[0], '--out-dir',
                str(tmp_path / 'again'))
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'ignored' in out.stdout


def test_infer_foreign_onnx_is_one_line_error(tmp_path):
    pytest.importorskip('onnxruntime')
    path = str(tmp_path / 'other.onnx')
    torch.onnx.export(
        torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8), ),
        path,
        dynamo=False)
    image = str(tmp_path / 'x.png')
    cv2.imwrite(image, np.zeros((32, 32, 3), np.uint8))
    out = infer(path, image, '--out-dir', str(tmp_path / 'out'))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no 'focal_retina' metadata" in lines[0], \
        out.stderr
