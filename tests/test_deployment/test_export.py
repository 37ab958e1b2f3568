"""Metadata, the image path end to end, and one-line errors for bad input."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from projects.focal_retina.deployment import (DeployError, OnnxDetector,
                                              read_onnx_metadata)
from projects.focal_retina.deployment.parity import (detections_equal,
                                                     match_detections)
from tests.conftest import ROOT
from tests.test_deployment.conftest import DEMO_CONFIG, build


def test_metadata_carries_what_inference_needs(demo):
    from projects.focal_retina.datasets import SyntheticShapesDataset
    meta = read_onnx_metadata(demo.path)
    assert meta['classes'] == list(SyntheticShapesDataset.METAINFO['classes'])
    assert len(meta['classes']) == demo.model.bbox_head.num_classes == 4
    pre = demo.cfg.model.data_preprocessor
    assert meta['preprocess']['mean'] == pytest.approx(pre.mean)
    assert meta['preprocess']['std'] == pytest.approx(pre.std)
    assert meta['preprocess']['bgr_to_rgb'] == pre.bgr_to_rgb
    assert meta['preprocess']['pad_size_divisor'] == pre.pad_size_divisor
    assert meta['preprocess']['resize'] == dict(
        scale=[256, 256], keep_ratio=True, interpolation='bilinear')
    assert meta['test_cfg'] == demo.cfg.model.test_cfg.to_dict()
    assert meta['head']['bbox_coder']['stds'] == list(
        demo.cfg.model.bbox_head.bbox_coder.target_stds)
    assert meta['input_shape'] is None and not meta['postprocess_in_graph']


def test_image_end_to_end_equals_mmdet_test_pipeline(demo):
    """A BGR image of odd size through the runner (resize, normalise, pad,
    rescale to the image) vs mmdet's test pipeline and test_step."""
    from mmcv.transforms import Compose
    steps = [
        dict(type='mmdet.LoadImageFromNDArray')
        if t['type'] == 'LoadImageFromFile' else t
        for t in demo.cfg.test_dataloader.dataset.pipeline
        if t['type'] != 'LoadAnnotations'
    ]
    gen = np.random.default_rng(5)
    bgr = gen.integers(0, 256, (75, 101, 3), dtype=np.uint8)
    data = Compose(steps)(dict(img=bgr, img_id=0))
    with torch.no_grad():
        sample = demo.model.test_step(
            dict(inputs=[data['inputs']],
                 data_samples=[data['data_samples']]))[0]
    ref = {k: v.numpy() for k, v in sample.pred_instances.to_dict().items()}
    ours = OnnxDetector(demo.path)([bgr])[0]
    stats = match_detections(ours, ref)
    assert detections_equal(stats) and stats['count_ref'] > 20, stats
    # original-image pixels: boxes within the 101 x 75 image
    assert ours['bboxes'][:, 2].max() <= 101 and ours['bboxes'].min() >= 0


def test_fixed_shape_export_pads_inputs(tmp_path, demo):
    from projects.focal_retina.deployment.export import export_onnx
    path = str(tmp_path / 'fixed.onnx')
    export_onnx(
        demo.model,
        demo.cfg,
        demo.classes,
        path,
        shape=(256, 256),
        dynamic=False)
    det = OnnxDetector(path)
    assert det.meta['input_shape'] == [256, 256]
    bgr = np.random.default_rng(6).integers(0, 256, (100, 60, 3), np.uint8)
    batch, metas = det.prepare([bgr])
    assert batch.shape == (1, 3, 256, 256)  # 256 x 154 resized, padded
    assert metas[0]['img_shape'] == (256, 154)
    # the reference: PyTorch + mmdet on the same padded input
    with torch.no_grad():
        cls, box = demo.model.bbox_head(
            demo.model.extract_feat(torch.from_numpy(batch)))
        ref = demo.model.bbox_head.predict_by_feat(
            cls, box, batch_img_metas=metas, rescale=True)[0]
    ref = {k: v.numpy() for k, v in ref.to_dict().items()}
    stats = match_detections(det([bgr])[0], ref)
    assert detections_equal(stats) and stats['count_ref'] > 20, stats


def test_onnx_file_without_our_metadata(tmp_path):
    pytest.importorskip('onnxruntime')
    path = str(tmp_path / 'other.onnx')
    torch.onnx.export(
        torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8), ),
        path,
        dynamo=False)
    with pytest.raises(DeployError, match="no 'focal_retina' metadata"):
        OnnxDetector(path)
    with pytest.raises(DeployError, match='not a readable ONNX file'):
        read_onnx_metadata(__file__)
    with pytest.raises(DeployError, match='does not exist'):
        OnnxDetector(str(tmp_path / 'missing.onnx'))


def test_opset_too_old(tmp_path, demo):
    from projects.focal_retina.deployment.export import export_onnx
    with pytest.raises(DeployError, match=r'opset 9 .*opset >= 11'):
        export_onnx(
            demo.model,
            demo.cfg,
            demo.classes,
            str(tmp_path / 'x.onnx'),
            opset=9)


def test_checkpoint_that_does_not_fit(tmp_path):
    from projects.focal_retina.deployment.export import build_detector
    model, cfg, _ = build(DEMO_CONFIG)
    ckpt = str(tmp_path / 'ckpt.pth')
    state = model.state_dict()
    state['bbox_head.retina_cls.weight'] = torch.zeros(9 * 80, 128, 3, 3)
    del state['neck.fpn_convs.0.conv.weight']
    torch.save(dict(state_dict=state), ckpt)
    with pytest.raises(DeployError) as err:
        build_detector(cfg, ckpt, 'demo.py')
    msg = str(err.value)
    assert '\n' not in msg and 'does not fit config' in msg
    assert 'bbox_head.retina_cls.weight is (720, 128, 3, 3)' in msg
    assert 'neck.fpn_convs.0.conv.weight' in msg


@pytest.mark.slow
def test_export_cli_one_line_errors(tmp_path):
    """Bad pairs and opsets end the CLI with one line naming the cause."""
    model, cfg, _ = build(DEMO_CONFIG)
    ckpt = str(tmp_path / 'demo.pth')
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(dataset_meta=dict(classes=('a', 'b', 'c', 'd')))), ckpt)
    tool = osp.join(ROOT, 'tools', 'deployment', 'export_onnx.py')
    r50 = osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py')
    cases = [
        ([
            r50, ckpt, '--out',
            str(tmp_path / 'a.onnx'), '--cfg-options',
            'model.backbone.init_cfg=None'
        ], f"checkpoint '{ckpt}' does not fit config"),
    ]
    for argv, expected in cases:
        out = subprocess.run([sys.executable, tool, *argv],
                             cwd=ROOT,
                             capture_output=True,
                             text=True,
                             timeout=300)
        assert out.returncode == 2, out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], out.stderr
    out = subprocess.run([
        sys.executable, tool, DEMO_CONFIG, ckpt, '--out',
        str(tmp_path / 'ok.onnx')
    ],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_onnx_metadata(str(tmp_path /
                                  'ok.onnx'))['classes'] == list('abcd')


def test_package_imports_without_onnxruntime():
    code = ('import sys; sys.modules["onnxruntime"] = None; '
            'sys.modules["onnx"] = None; import projects.focal_retina; '
            'import projects.focal_retina.deployment as d; '
            'from projects.focal_retina.deployment import OnnxDetector; '
            'print("ok")')
    out = subprocess.run([sys.executable, '-c', code],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=120)
    assert out.returncode == 0 and 'ok' in out.stdout, out.stderr[-2000:]
