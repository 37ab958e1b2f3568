"""OpenVINO as a backend of the one runner: an IR written by the export
tool, the backend choice and its one-line errors, bf16. The raw outputs
and detections of OpenVINO against PyTorch / mmdet are in test_parity.py
(every test there runs both backends)."""
import os.path as osp

import numpy as np
import pytest

from projects.focal_retina.deployment import DeployError, OnnxDetector
from projects.focal_retina.deployment.parity import (detections_equal,
                                                     match_detections,
                                                     max_relative_error)
from tests.test_deployment.test_parity import (make_batch, metas_for,
                                               mmdet_predict, torch_raw)

pytest.importorskip('openvino')


@pytest.fixture(scope='module')
def demo_ir(tmp_path_factory, demo) -> str:
    from projects.focal_retina.deployment.export import onnx_to_openvino_ir
    out = str(tmp_path_factory.mktemp('ir') / 'demo.xml')
    onnx_to_openvino_ir(demo.path, out)
    return out


def test_ir_runs_by_suffix_with_the_same_metadata(demo, demo_ir):
    """An IR converted from the export: OpenVINO chosen by its suffix, the
    .onnx file's metadata, fp32 weights (PyTorch's outputs to 1e-4 and
    mmdet's detections)."""
    assert osp.isfile(demo_ir[:-4] + '.bin')
    det = OnnxDetector(demo_ir)
    assert det.backend == 'openvino'
    ref_meta = OnnxDetector(demo.path).meta
    assert {k: v for k, v in det.meta.items() if k != 'format'} == \
        {k: v for k, v in ref_meta.items() if k != 'format'}
    batch = make_batch(96, 128, seed=5)
    cls, box = torch_raw(demo.model, batch)
    ours = det.run_raw(batch)
    for o, r in zip(ours[0] + ours[1], [*cls, *box]):
        assert max_relative_error(o, r.numpy()) <= 1e-4
    metas = metas_for(batch)
    ref = mmdet_predict(demo.model, cls, box, metas)
    for o, r in zip(det.run_batch(batch, metas), ref):
        stats = match_detections(o, r)
        assert detections_equal(stats) and stats['count_ref'] > 20, stats


def test_export_tool_writes_an_ir(tmp_path, demo, monkeypatch, capsys):
    """``export_onnx.py --out model.xml`` (a checkpoint of the fixture's
    model) writes model.xml + model.bin that give PyTorch's outputs."""
    import torch

    from tests.test_deployment.conftest import DEMO_CONFIG
    from tests.test_tools.test_analysis_tools import load_tool
    ckpt = str(tmp_path / 'demo.pth')
    torch.save(
        dict(
            state_dict=demo.model.state_dict(),
            meta=dict(dataset_meta=dict(classes=tuple(demo.classes)))), ckpt)
    out = str(tmp_path / 'model.xml')
    monkeypatch.setattr('sys.argv',
                        ['export_onnx.py', DEMO_CONFIG, ckpt, '--out', out])
    load_tool('tools/deployment/export_onnx.py').main()
    assert f'wrote {out}' in capsys.readouterr().out
    assert osp.isfile(osp.join(tmp_path, 'model.bin'))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'demo.pth', 'model.bin', 'model.xml'
    ]  # no temporary .onnx left behind
    batch = make_batch(64, 96, seed=6)
    cls, _ = torch_raw(demo.model, batch)
    det = OnnxDetector(out)
    assert det.classes == list(demo.classes)
    for o, r in zip(det.run_raw(batch)[0], cls):
        assert max_relative_error(o, r.numpy()) <= 1e-4


def test_backend_choice_errors(demo, demo_ir):
    with pytest.raises(DeployError, match='is an OpenVINO IR'):
        OnnxDetector(demo_ir, backend='onnxruntime')
    with pytest.raises(DeployError, match="bf16 needs backend 'openvino'"):
        OnnxDetector(demo.path, precision='bf16')
    with pytest.raises(DeployError, match="backend 'tensorrt'"):
        OnnxDetector(demo.path, backend='tensorrt')
    with pytest.raises(DeployError, match="precision 'fp16'"):
        OnnxDetector(demo.path, backend='openvino', precision='fp16')


def test_bf16_is_an_option_close_to_fp32(demo):
    """bf16 runs the same file: outputs near fp32's (bfloat16 keeps 8 bits
    of mantissa: a relative error of a few 1e-3 per operation) and the
    precision the plugin took is named."""
    import openvino as ov
    caps = ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
    det = OnnxDetector(demo.path, backend='openvino', precision='bf16')
    hint = 'bf16' if 'BF16' in caps else 'f32'
    assert det.describe().endswith(f'precision hint {hint}')
    batch = make_batch(64, 96, seed=7)
    fp32 = OnnxDetector(demo.path, backend='openvino').run_raw(batch)
    bf16 = det.run_raw(batch)
    errors = [
        max_relative_error(b, f)
        for b, f in zip(bf16[0] + bf16[1], fp32[0] + fp32[1])
    ]
    assert max(errors) < 0.1, errors
    if hint == 'bf16':
        assert max(errors) > 1e-6, 'bf16 computed exactly fp32'


def test_openvino_copies_its_outputs(demo):
    """The request's output buffers are reused by the next run: results
    of an earlier call must not change."""
    det = OnnxDetector(demo.path, backend='openvino')
    first = det.run_raw(make_batch(64, 64, seed=8))
    kept = [a.copy() for a in first[0]]
    det.run_raw(make_batch(64, 64, seed=9))
    for a, b in zip(first[0], kept):
        np.testing.assert_array_equal(a, b)
