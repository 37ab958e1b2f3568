"""int8 quantisation and its accuracy gate (tools/deployment/quantize.py).

The data set is made so that the fp32 model's AP is known without the code
under test: its ground truth is the fp32 export's own best detections
(onnxruntime, a path tested against mmdet in test_parity.py), so fp32
scores a COCO AP of 1.0 by construction. A model made worse on
purpose (calibrated on blank images: every activation range is that of a
flat image, and real images clip) must be refused.
"""
import json

import cv2
import numpy as np
import pytest

from projects.focal_retina.deployment import OnnxDetector
from projects.focal_retina.deployment import quantize as q
from tests.test_deployment.conftest import DEMO_CONFIG

pytest.importorskip('openvino')
pytest.importorskip('nncf')
GT_TOTAL = 30  # ground-truth boxes, at least


@pytest.fixture(scope='module')
def pseudo_set(tmp_path_factory, demo):
    """Three noise images, their ground truth (the fp32 file's best
    detections), a config pointing at them, and a folder of blank
    images."""
    root = tmp_path_factory.mktemp('pseudo')
    (root / 'img').mkdir()
    (root / 'blank').mkdir()
    det = OnnxDetector(demo.path)
    gen = np.random.default_rng(0)
    images, found = [], []
    for i in range(3):
        bgr = gen.integers(0, 256, (96, 128, 3), np.uint8)
        name = f'{i}.png'
        cv2.imwrite(str(root / 'img' / name), bgr)
        cv2.imwrite(str(root / 'blank' / name), np.zeros_like(bgr))
        images.append(dict(id=i + 1, file_name=name, width=128, height=96))
        found.append(det([bgr])[0])
    # One threshold for all images (COCO ranks detections across images):
    # every detection above it is a true positive, every one below a false
    # positive ranked after them all, so fp32's AP is 1.0. It sits in a
    # gap of the scores, so that another backend's rounding (1e-6) cannot
    # move a detection across it.
    scores = np.sort(np.concatenate([d['scores'] for d in found]))[::-1]
    rank = GT_TOTAL + int(np.argmax(np.diff(-scores[GT_TOTAL:3 * GT_TOTAL])))
    assert scores[rank] - scores[rank + 1] > 1e-4
    thr = (scores[rank] + scores[rank + 1]) / 2
    anns = []
    for i, dets in enumerate(found):
        for box, score, label in zip(dets['bboxes'], dets['scores'],
                                     dets['labels']):
            if score < thr:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=i + 1,
                    category_id=int(label) + 1,
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1),
                    iscrowd=0))
    cats = [dict(id=k + 1, name=c) for k, c in enumerate(demo.classes)]
    ann_file = str(root / 'ann.json')
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    config = root / 'pseudo.py'
    config.write_text(f'_base_ = {DEMO_CONFIG!r}\n'
                      'model = dict(backbone=dict(init_cfg=None))\n'
                      'test_dataloader = dict(dataset=dict(\n'
                      f'    data_root={str(root)!r}, ann_file="ann.json",\n'
                      '    data_prefix=dict(img="img/")))\n'
                      f'test_evaluator = dict(ann_file={ann_file!r})\n')
    return root


def run_tool(monkeypatch, capsys, *argv) -> tuple:
    """(exit status, stdout, stderr) of quantize.py in this process."""
    from tests.test_tools.test_analysis_tools import load_tool
    monkeypatch.setattr('sys.argv', ['quantize.py', *map(str, argv)])
    with pytest.raises(SystemExit) as exc:
        load_tool('tools/deployment/quantize.py').main()
    printed = capsys.readouterr()
    return exc.value.code, printed.out, printed.err


def aps(out: str) -> tuple:
    line = next(ln for ln in out.splitlines() if ln.startswith('coco/'))
    words = line.replace(',', '').split()
    return float(words[2]), float(words[4])


def test_gate():
    assert q.gate(0.50, 0.49, 0.01)  # a drop of 0.01 is accepted
    assert q.gate(0.50, 0.52, 0.01)  # a gain too
    assert not q.gate(0.50, 0.4899, 0.01)
    assert q.gate(0.50, 0.40, 0.2) and not q.gate(0.50, 0.40, 0.05)


def test_head_output_convs_match_every_level():
    names = [
        '/bbox_head/retina_cls/Conv', '/bbox_head/retina_reg_4/Conv',
        '/bbox_head/retina_cls_1/Conv/WithoutBiases',
        '/bbox_head/cls_convs.0/conv_1/Conv', '/backbone/conv1/Conv',
        '/bbox_head/retina_clsx/Conv'
    ]
    assert q.head_output_convs(names) == names[:3]


@pytest.mark.parametrize('fmt', ['openvino', 'onnx'])
def test_keep_head_fp32_leaves_exactly_the_head_outputs(demo, fmt):
    """Every convolution gets int8 weights, or all but the head's last
    two on each of the five levels with ``keep_head_fp32``."""
    batch = np.random.default_rng(1).standard_normal(
        (1, 3, 64, 64)).astype(np.float32)
    model, kept = q.quantize(demo.path, [batch], fmt)
    summary = q.precision_summary(model, fmt)
    assert kept == [] and summary['fp32_convs'] == []
    # 20 backbone + 8 FPN (+ 2 extra levels) + per level 2x2 + 2 head
    assert summary['convs'] > 50
    model, kept = q.quantize(demo.path, [batch], fmt, keep_head_fp32=True)
    summary = q.precision_summary(model, fmt)
    assert len(kept) == 10
    fp32 = sorted(
        n.replace('/WithoutBiases', '') for n in summary['fp32_convs'])
    assert fp32 == sorted(kept)


@pytest.mark.parametrize('suffix,backend', [('xml', 'openvino'),
                                            ('onnx', 'onnxruntime')])
def test_gate_refuses_a_model_made_worse(pseudo_set, demo, tmp_path,
                                         monkeypatch, capsys, suffix, backend):
    """Calibrated on blank images: both APs printed, fp32's 1.0 (its own
    detections are the ground truth), int8's lower by more than 0.01, and
    no file written (exit status 1). The same model passes a gate raised
    to 1.0 and is then written, metadata and all, for its backend (an
    OpenVINO IR, an onnxruntime QDQ file)."""
    config = pseudo_set / 'pseudo.py'
    out = tmp_path / f'int8.{suffix}'
    args = (config, demo.path, '--out', out, '--calib-dir',
            pseudo_set / 'blank', '--threads', 1)
    code, printed, _ = run_tool(monkeypatch, capsys, *args)
    ap32, ap8 = aps(printed)
    assert ap32 == 1.0
    assert ap32 - ap8 > 0.01, printed
    assert code == 1
    assert 'REFUSED: not written' in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left
    code, printed, _ = run_tool(monkeypatch, capsys, *args, '--max-drop', 1)
    assert code == 0 and f'wrote {out}' in printed
    assert aps(printed) == (ap32, ap8)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == (['int8.bin', 'int8.xml']
                       if suffix == 'xml' else ['int8.onnx'])
    det = OnnxDetector(str(out))
    assert det.backend == backend and det.classes == list(demo.classes)
    assert det.meta['quantization']['calibration']['images'] == 3


def test_bad_options_fail_in_one_line(pseudo_set, demo, tmp_path, monkeypatch,
                                      capsys):
    config = pseudo_set / 'pseudo.py'
    for extra, expected in (
        (['--out', tmp_path / 'a.bin'], 'expected a .xml'),
        (['--out', demo.path], 'would overwrite the fp32 model'),
        (['--out', tmp_path / 'a.xml', '--max-drop',
          '-0.1'], '--max-drop -0.1'),
        (['--out', tmp_path / 'a.xml', '--calib-images',
          '0'], '--calib-images 0'),
        (['--out', tmp_path / 'a.xml', '--backend',
          'onnxruntime'], 'cannot run an OpenVINO IR'),
    ):
        code, _, err = run_tool(monkeypatch, capsys, config, demo.path, *extra)
        assert code == 2 and expected in err, err
