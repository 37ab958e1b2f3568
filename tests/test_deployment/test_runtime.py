"""An exported file runs without PyTorch (docs/deployment.md): the runtime
package and ``tools/infer.py MODEL.onnx`` / ``MODEL.xml``, under
onnxruntime and OpenVINO, in a process where importing torch, mmcv,
mmengine or mmdet raises. References: mmdet's test pipeline
and ``test_step`` on the same image, in this process."""
import importlib.metadata
import json
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from projects.focal_retina.deployment.parity import (detections_equal,
                                                     match_detections)
from tests.conftest import ROOT

BLOCKED = ('torch', 'mmcv', 'mmengine', 'mmdet')
# Installed as sitecustomize.py: any import of a blocked package raises, so
# a runtime module that reaches for one fails loudly (an optional import in
# a try block would simply not load it, which is as good).
BLOCKER = f'''
import sys

BLOCKED = {BLOCKED!r}


class Blocker:

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(name + ' is blocked by this test')
        return None


sys.meta_path.insert(0, Blocker())
'''


def run_blocked(tmp_path, *argv) -> subprocess.CompletedProcess:
    """``python *argv`` from the repository root with the blocker."""
    site = tmp_path / 'blocker'
    site.mkdir(exist_ok=True)
    (site / 'sitecustomize.py').write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=f'{site}{os.pathsep}{ROOT}')
    return subprocess.run([sys.executable, *argv],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)


def mmdet_test_step(model, cfg, bgr: np.ndarray) -> dict:
    """mmdet's detections of the original image (test pipeline +
    ``test_step``)."""
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


@pytest.fixture
def image(tmp_path) -> str:
    path = str(tmp_path / 'odd.png')
    bgr = np.random.default_rng(11).integers(0, 256, (75, 101, 3), np.uint8)
    cv2.imwrite(path, bgr)
    return path


def test_the_blocker_blocks(tmp_path):
    out = run_blocked(tmp_path, '-c', 'import torch')
    assert out.returncode != 0 and 'blocked by this test' in out.stderr


def test_runtime_detects_without_torch(tmp_path, demo, image):
    code = ('import json, sys\n'
            'from projects.focal_retina_runtime import (OnnxDetector, '
            'predict_by_feat, read_image)\n'
            'det = OnnxDetector(sys.argv[1])\n'
            'dets = det([read_image(sys.argv[2])])[0]\n'
            'print(json.dumps({k: v.tolist() for k, v in dets.items()}))\n')
    out = run_blocked(tmp_path, '-c', code, demo.path, image)
    assert out.returncode == 0, out.stderr[-2000:]
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    ours = dict(
        bboxes=np.array(raw['bboxes'], np.float32).reshape(-1, 4),
        scores=np.array(raw['scores'], np.float32),
        labels=np.array(raw['labels'], np.int64))
    ref = mmdet_test_step(demo.model, demo.cfg, cv2.imread(image))
    stats = match_detections(ours, ref)
    assert detections_equal(stats) and stats['count_ref'] > 20, stats


def test_infer_tool_runs_an_onnx_file_without_torch(tmp_path, demo, image):
    """``tools/infer.py MODEL.onnx IMAGE``: the listing and preds JSON of
    mmdet's detections, a drawing, and none of the blocked packages."""
    out_dir = tmp_path / 'out'
    out = run_blocked(tmp_path, osp.join(ROOT, 'tools', 'infer.py'), demo.path,
                      image, '--out-dir', str(out_dir), '--score-thr', '0.3')
    assert out.returncode == 0, out.stderr[-2000:]
    ref = mmdet_test_step(demo.model, demo.cfg, cv2.imread(image))
    with open(out_dir / 'preds' / 'odd.png.json') as f:
        raw = json.load(f)
    ours = dict(
        bboxes=np.array(raw['bboxes'], np.float32).reshape(-1, 4),
        scores=np.array(raw['scores'], np.float32),
        labels=np.array(raw['labels'], np.int64))
    stats = match_detections(ours, ref)
    assert detections_equal(stats) and stats['count_ref'] > 20, stats
    with open(out_dir / 'detections.json') as f:
        records = json.load(f)
    kept = ref['scores'] >= 0.3
    assert len(records) == int(kept.sum()) > 0
    assert [r['score'] for r in records] == sorted(
        (r['score'] for r in records), reverse=True)
    assert sorted(r['class']
                  for r in records) == sorted(demo.classes[int(lab)]
                                              for lab in ref['labels'][kept])
    assert f'{image}: {len(records)} detections >= 0.3' in out.stdout
    drawn = cv2.imread(str(out_dir / 'vis' / 'odd.png'))
    assert drawn.shape == (75, 101, 3)
    assert not np.array_equal(drawn, cv2.imread(image))  # boxes drawn


@pytest.fixture(scope='module')
def openvino_files(tmp_path_factory, demo) -> dict:
    """The demo export as an fp32 IR and as an int8 IR (NNCF, one random
    calibration batch), written in this process."""
    pytest.importorskip('openvino')
    pytest.importorskip('nncf')
    from projects.focal_retina.deployment import quantize as q
    from projects.focal_retina.deployment.export import onnx_to_openvino_ir
    folder = tmp_path_factory.mktemp('openvino')
    fp32 = str(folder / 'fp32.xml')
    meta = onnx_to_openvino_ir(demo.path, fp32)
    batch = np.random.default_rng(0).standard_normal(
        (1, 3, 96, 128)).astype(np.float32)
    model, _ = q.quantize(demo.path, [batch], 'openvino')
    int8 = str(folder / 'int8.xml')
    q.save(q.with_metadata(model, 'openvino', meta), 'openvino', int8)
    return dict(fp32=fp32, int8=int8)


def test_openvino_runtime_without_torch(tmp_path, demo, image, openvino_files):
    """OpenVINO through the same runner, without the PyTorch stack: the
    .onnx file (fp32: mmdet's detections; bf16), the fp32 IR (mmdet's
    detections) and the int8 IR (it runs, the same classes)."""
    code = ('import json, sys\n'
            'from projects.focal_retina_runtime import OnnxDetector, '
            'read_image\n'
            'img = read_image(sys.argv[1])\n'
            'out = {}\n'
            'for path, backend, precision in (\n'
            '        (sys.argv[2], "openvino", "fp32"),\n'
            '        (sys.argv[2], "openvino", "bf16"),\n'
            '        (sys.argv[3], "auto", "fp32"),\n'
            '        (sys.argv[4], "auto", "fp32")):\n'
            '    det = OnnxDetector(path, backend=backend, '
            'precision=precision)\n'
            '    d = det([img])[0]\n'
            '    out[f"{path} {precision}"] = dict(backend=det.backend, '
            '**{k: v.tolist() for k, v in d.items()})\n'
            'print(json.dumps(out))\n')
    files = openvino_files
    out = run_blocked(tmp_path, '-c', code, image, demo.path, files['fp32'],
                      files['int8'])
    assert out.returncode == 0, out.stderr[-2000:]
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    ref = mmdet_test_step(demo.model, demo.cfg, cv2.imread(image))
    for key in (f'{demo.path} fp32', f'{files["fp32"]} fp32'):
        raw = runs[key]
        assert raw['backend'] == 'openvino'
        ours = dict(
            bboxes=np.array(raw['bboxes'], np.float32).reshape(-1, 4),
            scores=np.array(raw['scores'], np.float32),
            labels=np.array(raw['labels'], np.int64))
        stats = match_detections(ours, ref)
        assert detections_equal(stats) and stats['count_ref'] > 20, stats
    for key in (f'{demo.path} bf16', f'{files["int8"]} fp32'):
        assert runs[key]['backend'] == 'openvino'
        assert len(runs[key]['scores']) > 20


def test_infer_tool_runs_an_ir_without_torch(tmp_path, demo, image,
                                             openvino_files):
    """``tools/infer.py MODEL.xml IMAGE`` (OpenVINO chosen by the suffix)
    lists mmdet's detections without the blocked packages; ``--backend
    openvino --precision bf16`` runs the .onnx file."""
    tool = osp.join(ROOT, 'tools', 'infer.py')
    out = run_blocked(tmp_path, tool,
                      openvino_files['fp32'], image, '--out-dir',
                      str(tmp_path / 'ir'), '--score-thr', '0.3', '--threads',
                      '1')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'OpenVINO' in out.stdout and 'inference threads 1' in out.stdout
    ref = mmdet_test_step(demo.model, demo.cfg, cv2.imread(image))
    with open(tmp_path / 'ir' / 'preds' / 'odd.png.json') as f:
        raw = json.load(f)
    ours = dict(
        bboxes=np.array(raw['bboxes'], np.float32).reshape(-1, 4),
        scores=np.array(raw['scores'], np.float32),
        labels=np.array(raw['labels'], np.int64))
    stats = match_detections(ours, ref)
    assert detections_equal(stats) and stats['count_ref'] > 20, stats
    out = run_blocked(tmp_path, tool, demo.path, image, '--out-dir',
                      str(tmp_path / 'bf16'), '--backend', 'openvino',
                      '--precision', 'bf16')
    assert out.returncode == 0, out.stderr[-2000:]
    assert osp.isfile(tmp_path / 'bf16' / 'vis' / 'odd.png')
    for extra, expected in (
        (['--backend', 'onnxruntime'], 'is an OpenVINO IR'),
        (['--precision', 'bf16', '--backend',
          'onnxruntime'], 'is an OpenVINO IR'),
    ):
        out = run_blocked(tmp_path, tool, openvino_files['fp32'], image,
                          '--out-dir', str(tmp_path / 'x'), *extra)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
        assert expected in lines[0]
    out = run_blocked(tmp_path, tool, demo.path, image, '--out-dir',
                      str(tmp_path / 'x'), '--precision', 'bf16')
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert '--precision bf16: onnxruntime runs the file as' in lines[0]


def test_infer_tool_onnx_errors_without_torch(tmp_path, demo, image):
    """Options a file cannot honour are refused in one line, also without
    the PyTorch stack."""
    tool = osp.join(ROOT, 'tools', 'infer.py')
    for extra, expected in (
        (['--cfg-options', 'model.test_cfg.score_thr=0.1'],
         '--cfg-options applies to a PyTorch checkpoint'),
        (['--classes', 'person'], "--classes ['person']: not classes"),
    ):
        out = run_blocked(tmp_path, tool, demo.path, image, '--out-dir',
                          str(tmp_path / 'out'), *extra)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
        assert expected in lines[0]


def requirements(path: str) -> dict:
    """{distribution name: the line's version specifier}."""
    found = {}
    with open(path) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                name = re.split(r'[<>=!~;\[ ]', line)[0]
                found[name.lower()] = line[len(name):].strip()
    return found


def test_deploy_requirements_name_what_the_runtime_imports():
    """requirements/deploy.txt installs every third-party package that the
    runtime and the int8 tool import (numpy, onnxruntime, OpenVINO, NNCF
    and OpenCV, by whichever distribution provides cv2 here), each ``==``
    pin the installed version."""
    reqs = requirements(osp.join(ROOT, 'requirements', 'deploy.txt'))
    providers = importlib.metadata.packages_distributions()
    for module in ('numpy', 'onnxruntime', 'openvino', 'nncf', 'cv2'):
        dists = {d.lower() for d in providers.get(module, [])} & set(reqs)
        assert dists, f'{module} is not installed by deploy.txt ({reqs})'
    for name, spec in reqs.items():
        if spec.startswith('=='):
            assert spec[2:] == importlib.metadata.version(name), name
