"""tools/gpu_check: without CUDA, one line and exit 0; on the CPU, each
stage's code path on tiny sizes (the GPU figures themselves need a GPU
machine: tools/gpu_check/run.sh)."""
import importlib.util
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT

CHECK = osp.join(ROOT, 'tools', 'gpu_check', 'check.py')


def load_check():
    """tools/gpu_check/check.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('gpu_check_tool', CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_env(**extra) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', **extra)
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        env.pop(key, None)
    return env


@pytest.mark.parametrize(
    'cmd', [[sys.executable, CHECK], ['bash', 'tools/gpu_check/run.sh']],
    ids=['check.py', 'run.sh'])
def test_without_cuda_one_line_and_exit_0(cmd, tmp_path):
    env = cpu_env(
        PYTHON=sys.executable,
        FOCAL_RETINA_RESULTS_DIR=str(tmp_path / 'results'),
        GPU_CHECK_WORK=str(tmp_path / 'work'))
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith('gpu_check: no CUDA device')
    assert not osp.exists(tmp_path / 'results')  # nothing measured
    assert not osp.exists(tmp_path / 'work')  # nothing installed or built


def quick_args(check, *extra):
    return check.parse_args(['--device', 'cpu', '--quick', *extra])


def focal_reference(pred, labels, weight, avg, gamma=2.0, alpha=0.25):
    """The paper's FL (Eq. 5) summed over anchors and classes, per-anchor
    weights, divided by avg_factor; written from the formula."""
    p = pred.double().sigmoid()
    y = torch.zeros_like(p)
    pos = labels < pred.shape[1]
    y[pos, labels[pos]] = 1
    pt = torch.where(y == 1, p, 1 - p)
    at = torch.where(y == 1, torch.full_like(p, alpha),
                     torch.full_like(p, 1 - alpha))
    loss = -at * (1 - pt)**gamma * torch.log(pt)
    return (loss * weight.double()[:, None]).sum() / avg


def test_focal_loss_stage_on_cpu():
    check = load_check()
    args = quick_args(check)
    record = check.stage_focal_loss(args, time.time() + 60)
    assert record['ok'], record
    (case, ) = record['cases']
    h, w = args.img_size
    # P3-P7 of a 128 x 160 image, 9 anchors per location
    assert case['anchors'] == 9 * (16 * 20 + 8 * 10 + 4 * 5 + 2 * 3 + 1 * 2)
    from benchmarks.focal_loss import make_inputs
    expected = focal_reference(*make_inputs(case['anchors'])).item()
    for impl in ('ours', 'reference'):
        assert case['value'][impl] == pytest.approx(expected, rel=1e-5)
        assert case['ms'][impl] > 0
    assert case['reference'] == 'mmdet py_sigmoid_focal_loss'
    assert case['grad_max_rel_diff'] < 1e-4


def test_synthetic_batches_hold_boxes_inside_their_images():
    check = load_check()
    batches = check.synthetic_batches(3, 2, 64, 96)
    shapes = set()
    for batch in batches:
        assert len(batch['inputs']) == len(batch['data_samples']) == 2
        for img, sample in zip(batch['inputs'], batch['data_samples']):
            assert img.dtype == torch.uint8 and img.shape[0] == 3
            h, w = img.shape[1:]
            assert sample.img_shape == (h, w)
            shapes.add((h, w))
            boxes = sample.gt_instances.bboxes.tensor
            assert 2 <= len(boxes) <= 8
            assert (boxes[:, :2] >= 0).all()
            assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all()
            assert ((0 <= sample.gt_instances.labels) &
                    (sample.gt_instances.labels < 80)).all()
    assert shapes == {(64, 96), (64, 85)}  # full width and 4:3


@pytest.mark.parametrize('impl,precision,wrapper',
                         [('ours', 'fp32', 'OptimWrapper'),
                          ('mmdet', 'fp32', 'OptimWrapper'),
                          ('ours', 'amp', 'CPUBF16OptimWrapper')])
def test_train_stage_on_cpu(impl, precision, wrapper):
    check = load_check()
    args = quick_args(check, '--img-size', '64', '96')
    record = check.stage_train(args, impl, precision, time.time() + 120)
    assert record['ok'], record
    assert record['optim_wrapper'] == wrapper
    assert record['timed_steps'] == args.iters == 2
    assert record['images_per_s'] > 0
    assert math.isfinite(record['loss_first'])
    head = 'FocalRetinaHead' if impl == 'ours' else 'RetinaHead'
    from mmengine.config import Config
    cfg = Config.fromfile(record['config'] if impl ==
                          'ours' else check.config_path('mmdet'))
    assert cfg.model.bbox_head.type == head


def test_mmdet_amp_is_gpu_only():
    check = load_check()
    record = check.stage_train(quick_args(check), 'mmdet', 'amp', 0)
    assert record['skipped'] and 'needs a GPU' in record['summary']


def test_cuda_only_plugin_selects_the_marked_tests():
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [osp.join(ROOT, 'tools', 'gpu_check'), ROOT]))
    proc = subprocess.run([
        sys.executable, '-m', 'pytest', '-p', 'cuda_only', '--collect-only',
        '-q', '-o', 'addopts=', 'tests/test_engine/test_optim_wrapper.py'
    ],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    ids = [ln for ln in proc.stdout.splitlines() if '::' in ln]
    # the one test of that file under needs_cuda
    assert ids == [
        'tests/test_engine/test_optim_wrapper.py::'
        'test_cuda_amp_forward_is_float16'
    ]
    check = load_check()
    files = check.cuda_test_files(osp.join(ROOT, 'tests'))
    for path in ('tests/test_losses/test_focal_loss.py',
                 'tests/test_losses/test_dr_loss.py',
                 'tests/test_engine/test_optim_wrapper.py',
                 'tests/test_tools/test_cli.py'):
        assert path in files


def test_mmengine_log_lines_are_read():
    check = load_check()
    text = ('12/06 11:00:00 - mmengine - INFO - Iter(train) [ 5/20]  '
            'base_lr: 3.3e-03 lr: 3.3e-03  eta: 0:00:03  time: 0.2050  '
            'data_time: 0.0100  memory: 3301  loss: 1.9\n'
            'other line\n'
            '12/06 11:00:01 - mmengine - INFO - Iter(train) [20/20]  '
            'time: 0.1234  data_time: 0.0100  loss: 1.2\n')
    assert check.logged_iters(text) == [
        dict(iter=5, time=0.205, memory=3301.0),
        dict(iter=20, time=0.1234)
    ]


def test_a_spent_budget_leaves_every_stage_a_row(tmp_path):
    """Stages that no longer fit are rows saying so; the table and the
    results file still come out (no stage runs: seconds)."""
    env = cpu_env(
        FOCAL_RETINA_RESULTS_DIR=str(tmp_path),
        GPU_CHECK_SETUP='install=ok=3=11 wheels;mmcv_build=FAILED=9=a, b')
    proc = subprocess.run([
        sys.executable, CHECK, '--device', 'cpu', '--quick', '--budget', '5',
        '--results', 'smoke'
    ],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / 'smoke.json') as f:
        record = json.load(f)
    check = load_check()
    names = check.stage_plan(check.parse_args([]))
    assert list(record['stages']) == names
    assert len(names) == 7  # tests, loss, 4 training runs, dist_train
    for name in names:
        assert record['stages'][name]['summary'].startswith('not run')
        assert f'| {name} | not run | 0 |' in record['table']
    assert record['setup'][1] == dict(
        step='mmcv_build', status='FAILED', seconds='9', text='a, b')
    assert '| install | ok | 3 | 11 wheels |' in proc.stdout
    assert record['meta']['command'].endswith('--results smoke')


@pytest.mark.slow
def test_subprocess_stages_on_cpu(tmp_path):
    """cuda_tests (all skipped without CUDA) and dist_train (torchrun, 2
    iterations of the R-50 config at 128 x 160 on generated shapes)."""
    env = cpu_env(FOCAL_RETINA_RESULTS_DIR=str(tmp_path))
    proc = subprocess.run([
        sys.executable, CHECK, '--device', 'cpu', '--quick', '--stages',
        'cuda_tests', 'dist_train', '--tests',
        'tests/test_engine/test_optim_wrapper.py', '--results', 'smoke',
        '--log-dir',
        str(tmp_path / 'logs')
    ],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=420)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / 'smoke.json') as f:
        stages = json.load(f)['stages']
    tests = stages['cuda_tests']
    assert tests['ok'] and tests['skipped'], tests
    assert (tests['tests'], tests['skipped_tests']) == (1, 1)
    dist = stages['dist_train']
    assert dist['ok'], dist
    assert dist['iters'] == dist['requested_iters'] == 2
    assert osp.isfile(tmp_path / 'logs' / 'dist_train.log')
