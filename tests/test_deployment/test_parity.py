"""The exported graph and both post-processings against PyTorch / mmdet.

References are the PyTorch model's own outputs and mmdet's
``RetinaHead.predict_by_feat`` (with the config's ``test_cfg``) on them;
the code under test is the ONNX graph (run by onnxruntime and by
OpenVINO), the NumPy post-processing and the in-graph NMS. The batches
here are already normalised and padded, and the exports dynamic, so the
graph gets exactly PyTorch's input; images (and a
fixed-size export, which pads further) are compared with mmdet's
``test_step`` on the original image in test_export.py and test_runtime.py.
"""
import importlib.util

import numpy as np
import pytest
import torch

from projects.focal_retina.deployment import OnnxDetector, predict_by_feat
from projects.focal_retina.deployment.parity import (detections_equal,
                                                     match_detections,
                                                     max_relative_error)

RAW_TOL = 1e-4
# Every parity test runs the file under both backends, fp32.
BACKENDS = [
    'onnxruntime',
    pytest.param(
        'openvino',
        marks=pytest.mark.skipif(
            importlib.util.find_spec('openvino') is None,
            reason='openvino is not installed'))
]


def torch_raw(model, batch: np.ndarray):
    with torch.no_grad():
        cls, box = model.bbox_head(model.extract_feat(torch.from_numpy(batch)))
    return cls, box


def mmdet_predict(model, cls, box, metas):
    """mmdet's own post-processing (with the model's test_cfg)."""
    with torch.no_grad():
        results = model.bbox_head.predict_by_feat(
            list(cls), list(box), batch_img_metas=metas, rescale=True)
    return [{k: v.numpy() for k, v in r.to_dict().items()} for r in results]


def make_batch(height: int, width: int, seed: int = 0) -> np.ndarray:
    gen = np.random.default_rng(seed)
    return gen.standard_normal((2, 3, height, width)).astype(np.float32)


def metas_for(batch: np.ndarray) -> list:
    """Two images: one filling the padded batch, one smaller and resized
    by unequal factors (clipping and rescaling both matter)."""
    h, w = batch.shape[2:]
    return [
        dict(img_shape=(h, w), scale_factor=(1.0, 1.0)),
        dict(img_shape=(h - 13, w - 21), scale_factor=(0.8, 1.25)),
    ]


def assert_same_detections(ours: list, ref: list) -> int:
    total = 0
    for o, r in zip(ours, ref):
        stats = match_detections(o, r)
        assert detections_equal(stats), stats
        total += stats['count_ref']
    return total


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('size', [(64, 96), (160, 128)])
@pytest.mark.parametrize('name', ['demo', 'r50_tiny'])
def test_raw_outputs_equal_pytorch(request, name, size, backend):
    m = request.getfixturevalue(name)
    batch = make_batch(*size)
    cls_o, box_o = OnnxDetector(m.path, backend=backend).run_raw(batch)
    cls_t, box_t = torch_raw(m.model, batch)
    assert len(cls_o) == len(cls_t) == 5
    for ours, ref in zip(cls_o + box_o, [*cls_t, *box_t]):
        assert ours.shape == tuple(ref.shape)
        assert max_relative_error(ours, ref.numpy()) <= RAW_TOL


def test_numpy_postprocess_equals_mmdet_on_same_outputs(demo):
    """The NumPy port on PyTorch's own raw outputs: mmdet's detections."""
    batch = make_batch(96, 128, seed=1)
    cls, box = torch_raw(demo.model, batch)
    metas = metas_for(batch)
    meta = OnnxDetector(demo.path).meta
    ours = predict_by_feat([c.numpy() for c in cls], [b.numpy() for b in box],
                           metas, meta['head'], meta['test_cfg'])
    ref = mmdet_predict(demo.model, cls, box, metas)
    assert assert_same_detections(ours, ref) > 50
    for o, r in zip(ours, ref):  # same arithmetic: same order, same values
        np.testing.assert_array_equal(o['labels'], r['labels'])
        np.testing.assert_allclose(o['bboxes'], r['bboxes'], atol=1e-3)
        np.testing.assert_allclose(o['scores'], r['scores'], atol=1e-6)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('name', ['demo', 'r50_tiny'])
def test_onnxruntime_detections_equal_mmdet(request, name, backend):
    """onnxruntime / OpenVINO + NumPy post-processing vs PyTorch +
    mmdet."""
    m = request.getfixturevalue(name)
    batch = make_batch(96, 128, seed=2)
    metas = metas_for(batch)
    det = OnnxDetector(m.path, backend=backend)
    assert det.backend == backend
    ours = det.run_batch(batch, metas)
    ref = mmdet_predict(m.model, *torch_raw(m.model, batch), metas)
    assert assert_same_detections(ours, ref) > 50


@pytest.mark.parametrize('backend', BACKENDS)
def test_in_graph_postprocess_equals_mmdet(demo_in_graph, backend):
    batch = make_batch(96, 128, seed=3)
    metas = metas_for(batch)
    det = OnnxDetector(demo_in_graph.path, backend=backend)
    assert det.in_graph
    ours = det.run_batch(batch, metas)
    model = demo_in_graph.model
    ref = mmdet_predict(model, *torch_raw(model, batch), metas)
    assert assert_same_detections(ours, ref) > 50
    # The graph keeps the input size dynamic: another size, one image.
    batch = make_batch(160, 96, seed=4)[:1]
    metas = metas_for(batch)[:1]
    ref = mmdet_predict(model, *torch_raw(model, batch), metas)
    assert assert_same_detections(det.run_batch(batch, metas), ref) > 50


def test_no_detection_gives_empty_outputs(tmp_path):
    pytest.importorskip('onnxruntime')
    from projects.focal_retina.deployment.export import export_onnx
    from tests.test_deployment.conftest import DEMO_CONFIG, build
    model, cfg, classes = build(DEMO_CONFIG, cls_bias=-30.0)
    batch = make_batch(64, 64)
    metas = metas_for(batch)
    ref = mmdet_predict(model, *torch_raw(model, batch), metas)
    assert all(len(r['scores']) == 0 for r in ref)
    for in_graph in (False, True):
        path = str(tmp_path / f'empty_{in_graph}.onnx')
        export_onnx(model, cfg, classes, path, with_postprocess=in_graph)
        for dets in OnnxDetector(path).run_batch(batch, metas):
            assert dets['bboxes'].shape == (0, 4)
            assert dets['scores'].shape == dets['labels'].shape == (0, )
