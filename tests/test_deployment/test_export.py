"""Metadata, the image path end to end, and one-line errors for bad input."""
import json
import os.path as osp
import subprocess
import sys

import cv2
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


def mmdet_test_step(model, cfg, bgr: np.ndarray) -> dict:
    """mmdet's detections of the ORIGINAL image: the config's test
    pipeline (resize, pad to the divisor only) and ``test_step``."""
    from mmcv.transforms import Compose
    steps = [
        dict(type='mmdet.LoadImageFromNDArray')
        if t['type'] == 'LoadImageFromFile' else t
        for t in cfg.test_dataloader.dataset.pipeline
        if t['type'] != 'LoadAnnotations'
    ]
    data = Compose(steps)(dict(img=bgr, img_id=0))
    with torch.no_grad():
        sample = model.test_step(
            dict(inputs=[data['inputs']],
                 data_samples=[data['data_samples']]))[0]
    return {k: v.numpy() for k, v in sample.pred_instances.to_dict().items()}


@pytest.fixture(scope='module')
def fixed(tmp_path_factory, demo) -> str:
    """The demo model exported with a fixed 256 x 256 input."""
    from projects.focal_retina.deployment.export import export_onnx
    path = str(tmp_path_factory.mktemp('fixed') / 'fixed.onnx')
    export_onnx(
        demo.model,
        demo.cfg,
        demo.classes,
        path,
        shape=(256, 256),
        dynamic=False)
    return path


def test_fixed_shape_export_without_extra_padding_equals_mmdet(fixed, demo):
    """An image the test pipeline resizes to exactly the fixed size gets
    no extra padding: mmdet's detections of the original image."""
    det = OnnxDetector(fixed)
    assert det.meta['input_shape'] == [256, 256]
    bgr = np.random.default_rng(6).integers(0, 256, (120, 120, 3), np.uint8)
    batch, metas = det.prepare([bgr])
    assert batch.shape == (1, 3, 256, 256)
    assert metas[0]['img_shape'] == (256, 256)
    stats = match_detections(
        det([bgr])[0], mmdet_test_step(demo.model, demo.cfg, bgr))
    assert detections_equal(stats) and stats['count_ref'] > 20, stats


def test_fixed_size_difference_is_measured_against_mmdet(fixed, demo):
    """What export_onnx.py prints for a --shape file: the probe it names
    (a random image 0.6 times as wide, seed 0), run through the exported
    file in onnxruntime, against mmdet's test_step on the original probe.
    A 256 x 153 probe resizes to 256 x 153 and is padded to 256 x 160 by
    PyTorch, to 256 x 256 by the file."""
    from projects.focal_retina.deployment.export import fixed_size_difference
    diff = fixed_size_difference(demo.model, demo.cfg, (256, 256))
    assert diff['probe_shape'] == [256, 153]
    assert diff['resized_shape'] == [256, 153]
    probe = np.random.default_rng(0).integers(
        0, 256, (256, 153, 3), dtype=np.uint8)
    stats = match_detections(
        OnnxDetector(fixed)([probe])[0],
        mmdet_test_step(demo.model, demo.cfg, probe))
    assert diff['detections_ref'] == stats['count_ref'] > 20
    assert diff['detections_fixed'] == stats['count_ours']
    assert diff['unmatched'] == stats['unmatched']
    assert diff['max_det_score_diff'] == pytest.approx(
        stats['max_score_diff'], abs=1e-4)
    # the padding changes the scores near the border (the defect's cause)
    assert diff['max_score_diff'] > 1e-3


def test_export_tool_prints_the_fixed_size_difference(tmp_path, demo,
                                                      monkeypatch, capsys):
    from projects.focal_retina.deployment.export import fixed_size_difference
    from tests.test_tools.test_analysis_tools import load_tool
    ckpt = str(tmp_path / 'demo.pth')
    torch.save(
        dict(
            state_dict=demo.model.state_dict(),
            meta=dict(dataset_meta=dict(classes=tuple(demo.classes)))), ckpt)
    tool = load_tool('tools/deployment/export_onnx.py')
    out = str(tmp_path / 'fixed.onnx')
    monkeypatch.setattr('sys.argv', [
        'export_onnx.py', DEMO_CONFIG, ckpt, '--out', out, '--shape', '256',
        '256'
    ])
    tool.main()
    printed = capsys.readouterr().out
    diff = fixed_size_difference(demo.model, demo.cfg, (256, 256))
    assert 'note: every input is padded to 256x256 px; PyTorch pads to a ' \
        'multiple of 32 only' in printed
    assert 'On a random probe image of 256x153 px' in printed
    assert (f'detections {diff["detections_fixed"]} vs PyTorch\'s '
            f'{diff["detections_ref"]} ({diff["unmatched"]} of PyTorch\'s '
            'without a partner') \
        in printed
    assert f'scores differ by up to {diff["max_score_diff"]:.4f}' in printed
    # a dynamic export has nothing to say about padding
    monkeypatch.setattr('sys.argv', [
        'export_onnx.py', DEMO_CONFIG, ckpt, '--out',
        str(tmp_path / 'dyn.onnx')
    ])
    tool.main()
    assert 'padded' not in capsys.readouterr().out


def test_check_parity_measures_fixed_size_files(tmp_path, demo, fixed,
                                                monkeypatch, capsys):
    """check_parity.py's reference is mmdet on the original image, for a
    fixed-size file too: a 100 x 60 image (resized to 256 x 154, padded
    to 256 x 256 by the file, to 256 x 160 by PyTorch) differs, and the
    tool says so, with the figures of this test's own comparison, in its
    output and in the --results file."""
    from tests.test_tools.test_analysis_tools import load_tool
    monkeypatch.syspath_prepend(osp.join(ROOT, 'benchmarks'))
    import results_io  # the module the tool imports (benchmarks/ on path)
    monkeypatch.setattr(results_io, 'RESULTS_DIR', str(tmp_path))
    ckpt = str(tmp_path / 'demo.pth')
    torch.save(
        dict(
            state_dict=demo.model.state_dict(),
            meta=dict(dataset_meta=dict(classes=tuple(demo.classes)))), ckpt)
    image = str(tmp_path / 'narrow.png')
    bgr = np.random.default_rng(6).integers(0, 256, (100, 60, 3), np.uint8)
    cv2.imwrite(image, bgr)
    stats = match_detections(
        OnnxDetector(fixed)([bgr])[0],
        mmdet_test_step(demo.model, demo.cfg, bgr))
    assert not detections_equal(stats), stats  # the padding shows
    tool = load_tool('tools/deployment/check_parity.py')
    runs = {}
    for name, path in (('fixed', fixed), ('dynamic', demo.path)):
        monkeypatch.setattr('sys.argv', [
            'check_parity.py', DEMO_CONFIG, ckpt, path, '--images', image,
            '--results', f'parity_{name}'
        ])
        with pytest.raises(SystemExit) as exc:
            tool.main()
        with open(tmp_path / f'parity_{name}.json') as f:
            runs[name] = (exc.value.code, capsys.readouterr().out,
                          json.load(f))
    code, printed, record = runs['fixed']
    assert code == 1 and 'PARITY FAILED' in printed
    assert 'fixed input 256x256: every image is padded to it, PyTorch ' \
        'pads to a multiple of 32 only' in printed
    assert '(1 of 1 images padded more, 1 differing above)' in printed
    assert record['input_shape'] == [256, 256] and not record['ok']
    assert record['images_padded_more'] == 1
    assert record['images'] == record['images_differing'] == 1
    assert record['detections_ref'] == stats['count_ref']
    assert record['detections_ours'] == stats['count_ours']
    assert record['unmatched'] == stats['unmatched']
    assert record['max_score_diff'] == pytest.approx(
        stats['max_score_diff'], abs=1e-4)
    assert record['meta']['command'].startswith('check_parity.py')
    assert record['output'].endswith('PARITY FAILED')  # what was printed
    assert record['output'] in printed
    code, printed, record = runs['dynamic']
    assert code == 0 and 'PARITY OK' in printed and 'fixed' not in printed
    assert record['ok'] and record['input_shape'] is None
    assert record['images_differing'] == 0


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


@pytest.mark.parametrize('in_graph,floor', [(False, 9), (True, 10)])
def test_opset_floor(tmp_path, demo, in_graph, floor):
    """Each graph exports at its documented floor (raw outputs 9: Upsample
    with computed scales; --with-postprocess 10: NonMaxSuppression) and
    detects what mmdet's predict_by_feat detects there; one opset lower is
    refused in one line naming the floor."""
    from projects.focal_retina.deployment.export import export_onnx
    from tests.test_deployment.test_parity import (assert_same_detections,
                                                   make_batch, metas_for,
                                                   mmdet_predict, torch_raw)
    path = str(tmp_path / f'floor_{floor}.onnx')
    export_onnx(
        demo.model,
        demo.cfg,
        demo.classes,
        path,
        opset=floor,
        with_postprocess=in_graph)
    det = OnnxDetector(path)
    assert det.meta['source']['opset'] == floor and det.in_graph == in_graph
    for size, seed in (((96, 128), 2), ((160, 96), 4)):
        batch = make_batch(*size, seed=seed)
        metas = metas_for(batch)
        ref = mmdet_predict(demo.model, *torch_raw(demo.model, batch), metas)
        assert assert_same_detections(det.run_batch(batch, metas), ref) > 50
    with pytest.raises(DeployError) as err:
        export_onnx(
            demo.model,
            demo.cfg,
            demo.classes,
            str(tmp_path / 'below.onnx'),
            opset=floor - 1,
            with_postprocess=in_graph)
    msg = str(err.value)
    assert '\n' not in msg
    assert f'opset {floor - 1} is not supported' in msg
    assert f'needs opset >= {floor}' in msg


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
