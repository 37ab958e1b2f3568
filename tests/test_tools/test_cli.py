"""The real command-line tools, run as subprocesses on a tiny dataset.

These are CPU tests: every run hides the GPUs (``CUDA_VISIBLE_DEVICES=''``,
mmengine's way to train on the CPU), so they test the same thing on a GPU
host; the GPU behaviour of ``--amp`` has its own CUDA-only test.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from tests.conftest import ROOT, free_port

DEMO = 'configs/demo/retina_r18_fpn_shapes.py'
pytestmark = pytest.mark.slow
# Runs a tool (argv[1]) as __main__ after registering ForwardDtypeProbe,
# which PROBE_HOOK (a --cfg-options item) adds to the run.
PROBE_HOOK = 'default_hooks.dtype_probe.type=ForwardDtypeProbe'
WITH_PROBE = ('import runpy, sys; import tests.test_tools.test_cli; '
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
              "run_name='__main__')")


@HOOKS.register_module()
class ForwardDtypeProbe(Hook):
    """Logs the dtypes that a backbone conv and the classification conv
    produced in the training forwards (``forward dtypes: [...]``)."""

    def before_train(self, runner) -> None:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        self.dtypes = set()

        def record(module, args, output):
            if module.training:  # not the validation forwards
                self.dtypes.add(str(output.dtype))

        model.backbone.conv1.register_forward_hook(record)
        model.bbox_head.retina_cls.register_forward_hook(record)

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        runner.logger.info(f'forward dtypes: {sorted(self.dtypes)}')


def tool_env(cpu: bool = True) -> dict:
    """The environment of a tool run: no torchrun variables and, for the
    CPU tests, no visible GPU."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                     'MASTER_PORT')
    }
    if cpu:
        env['CUDA_VISIBLE_DEVICES'] = ''
    return env


def run_tool(*args, expect_rc=0, cpu=True, probe=False):
    cmd = [sys.executable, *(['-c', WITH_PROBE] if probe else []), *args]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=tool_env(cpu))
    out = proc.stdout + proc.stderr
    assert proc.returncode == expect_rc, out[-4000:]
    return out


def data_options(root: str, iters: int) -> list:
    """--cfg-options pointing the demo config at ``root`` for ``iters``."""
    opts = [
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        'default_hooks.logger.interval=1',
        'train_dataloader.batch_size=2',
        # an untrained model scores below 0.05; keep boxes so that
        # CocoMetric has detections to evaluate
        'model.test_cfg.score_thr=0.0'
    ]
    for split in ('train', 'val', 'test'):
        opts += [
            f'{split}_dataloader.num_workers=0',
            f'{split}_dataloader.persistent_workers=False',
            f'{split}_dataloader.dataset.data_root={root}'
        ]
    for split in ('val', 'test'):
        opts.append(f'{split}_evaluator.ann_file='
                    f'{root}/annotations/val.json')
    return opts


@pytest.fixture(scope='module')
def trained(tiny_shapes, tmp_path_factory):
    """Trains the demo model for 4 iterations through tools/train.py (with
    ForwardDtypeProbe: the float32 reference of the --amp test)."""
    work = str(tmp_path_factory.mktemp('train'))
    out = run_tool(
        'tools/train.py',
        DEMO,
        '--work-dir',
        work,
        '--cfg-options',
        *data_options(tiny_shapes, 4),
        PROBE_HOOK,
        probe=True)
    return work, out


def probed_dtypes(out: str, iters: int) -> str:
    """The dtypes ForwardDtypeProbe logged last, checking it logged once per
    iteration."""
    lines = [line for line in out.splitlines() if 'forward dtypes:' in line]
    assert len(lines) == iters, out[-4000:]
    return lines[-1].split('forward dtypes: ')[1]


def test_train_writes_checkpoint_and_validates(trained):
    work, out = trained
    assert osp.isfile(osp.join(work, 'iter_4.pth'))
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_4.pth')
    assert 'Iter(train) [4/4]' in out
    assert 'coco/bbox_mAP_50' in out


def test_test_tool_prints_coco_metrics(trained, tiny_shapes, tmp_path):
    work, _ = trained
    out = run_tool('tools/test.py', DEMO, osp.join(work, 'iter_4.pth'),
                   '--work-dir', str(tmp_path), '--out',
                   str(tmp_path / 'preds.pkl'), '--cfg-options',
                   *data_options(tiny_shapes, 4))
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95' in out
    metrics_files = glob.glob(str(tmp_path / '*' / '*.json'))
    assert metrics_files
    with open(metrics_files[0]) as f:
        metrics = json.load(f)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75',
                'coco/bbox_mAP_s'):
        assert 0.0 <= metrics[key] <= 1.0
    # no medium/large objects in 96 px images: COCO reports -1
    assert metrics['coco/bbox_mAP_l'] == -1.0
    assert osp.getsize(tmp_path / 'preds.pkl') > 0


def test_infer_lists_and_draws(trained, tiny_shapes, tmp_path):
    work, _ = trained
    imgs = sorted(glob.glob(osp.join(tiny_shapes, 'val', '*.png')))[:3]
    grid = str(tmp_path / 'grid.png')
    out = run_tool('tools/infer.py', DEMO, osp.join(work, 'iter_4.pth'),
                   *imgs, '--score-thr', '0.0', '--out-dir',
                   str(tmp_path / 'out'), '--grid', grid)
    assert out.count('detections >= 0.0') == 3
    img = cv2.imread(grid)
    assert img.shape == (2 * 96, 2 * 96, 3)  # 3 images tiled 2 by 2
    assert len(os.listdir(tmp_path / 'out' / 'vis')) == 3


def test_fuse_conv_bn_keeps_metrics_and_detections(trained, tiny_shapes,
                                                   tmp_path):
    """--fuse-conv-bn folds the backbone's 20 BatchNorms after loading the
    checkpoint; tools/test.py's predictions and tools/infer.py's detections
    equal those of the unfolded model."""
    import pickle
    ckpt = osp.join(trained[0], 'iter_4.pth')
    preds = {}
    for fuse in (False, True):
        name = 'fused' if fuse else 'plain'
        out = run_tool('tools/test.py', DEMO, ckpt, '--work-dir',
                       str(tmp_path / name), '--out',
                       str(tmp_path / f'{name}.pkl'),
                       *(['--fuse-conv-bn'] if fuse else []), '--cfg-options',
                       *data_options(tiny_shapes, 4))
        assert ('folded 20 BatchNorm layers' in out) == fuse, out[-3000:]
        with open(tmp_path / f'{name}.pkl', 'rb') as f:  # our own dump
            preds[name] = pickle.load(f)
    assert len(preds['plain']) == len(preds['fused']) > 0
    for a, b in zip(preds['plain'], preds['fused']):
        a, b = a['pred_instances'], b['pred_instances']
        assert len(a['scores']) == len(b['scores']) > 0
        torch.testing.assert_close(
            b['scores'], a['scores'], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            b['bboxes'], a['bboxes'], atol=1e-2, rtol=1e-4)

    imgs = sorted(glob.glob(osp.join(tiny_shapes, 'val', '*.png')))[:2]
    found = {}
    for fuse in (False, True):
        det = str(tmp_path / f'det_{fuse}.json')
        out = run_tool('tools/infer.py', DEMO, ckpt, *imgs,
                       '--score-thr', '0.0', '--out-dir',
                       str(tmp_path / f'infer_{fuse}'), '--detections', det,
                       *(['--fuse-conv-bn'] if fuse else []), '--cfg-options',
                       'model.test_cfg.score_thr=0.0')
        assert ('folded 20 BatchNorm layers' in out) == fuse, out[-3000:]
        with open(det) as f:
            found[fuse] = json.load(f)
    assert len(found[False]) == len(found[True]) > 0
    for a, b in zip(found[False], found[True]):
        assert (a['file'], a['class']) == (b['file'], b['class'])
        assert abs(a['score'] - b['score']) < 1e-4
        assert max(abs(p - q) for p, q in zip(a['bbox'], b['bbox'])) < 1e-2


def probed_train(tiny_shapes, work_dir, *extra, cpu=True):
    """2 iterations of tools/train.py with ForwardDtypeProbe; returns the
    log and the dtypes the training forwards produced."""
    out = run_tool(
        'tools/train.py',
        DEMO,
        *extra,
        '--work-dir',
        str(work_dir),
        '--cfg-options',
        *data_options(tiny_shapes, 2),
        'train_cfg.val_interval=10',
        PROBE_HOOK,
        cpu=cpu,
        probe=True)
    return out, probed_dtypes(out, 2)


def test_amp_on_cpu_trains_in_bfloat16(trained, tiny_shapes, tmp_path):
    out, dtypes = probed_train(tiny_shapes, tmp_path, '--amp')
    assert dtypes == "['torch.bfloat16']"
    assert "type='CPUBF16OptimWrapper'" in out
    assert 'Iter(train) [2/2]' in out
    assert osp.isfile(tmp_path / 'iter_2.pth')
    # the probe tells the difference: float32 without --amp
    assert probed_dtypes(trained[1], 4) == "['torch.float32']"


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
def test_amp_on_cuda_trains_in_float16(tiny_shapes, tmp_path):
    out, dtypes = probed_train(tiny_shapes, tmp_path, '--amp', cpu=False)
    assert "type='AmpOptimWrapper'" in out
    assert dtypes == "['torch.float16']"


@pytest.mark.parametrize('args,expected', [
    (['tools/train.py', 'configs/nope.py'], "config file 'configs/nope.py' "
     'does not exist'),
    (['tools/test.py', DEMO, 'missing.pth'], "checkpoint 'missing.pth' "
     'does not exist'),
    (['tools/infer.py', DEMO, 'missing.pth', 'x.png'
      ], "checkpoint 'missing.pth' does not exist"),
    (['tools/make_shapes.py', '--out', '/tmp/never', '--min-size', '1'
      ], 'invalid min_size=1'),
])
def test_bad_input_gives_one_line_error(args, expected):
    out = run_tool(*args, expect_rc=2)
    assert expected in out
    assert 'Traceback' not in out


def test_resume_continues_identically(tiny_shapes, tmp_path):
    """4 iterations in one go == --resume from its iteration-2 checkpoint
    in another work dir, on to 4. (Stopping a run by lowering max_iters
    would change its lr schedule, which is a fraction of max_iters.)"""
    opts = data_options(tiny_shapes, 4) + [
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=2',
        'train_cfg.val_interval=100', 'randomness.deterministic=True'
    ]
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    run_tool('tools/train.py', DEMO, '--work-dir', one, '--cfg-options', *opts)
    out = run_tool('tools/train.py', DEMO, '--work-dir', two, '--resume',
                   osp.join(one, 'iter_2.pth'), '--cfg-options', *opts)
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [3/4]' in out and 'Iter(train) [1/4]' not in out
    assert not osp.exists(osp.join(two, 'iter_2.pth'))  # not retrained

    from projects.focal_retina.engine import safe_load
    a, b = (safe_load(osp.join(d, 'iter_4.pth')) for d in (one, two))
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    for key in a['state_dict']:
        assert torch.equal(a['state_dict'][key], b['state_dict'][key]), key
    assert a['optimizer']['state'].keys() == b['optimizer']['state'].keys()
    for pid, state in a['optimizer']['state'].items():
        assert state.keys() == b['optimizer']['state'][pid].keys()
        for name, value in state.items():  # AdamW: step, exp_avg(_sq)
            assert torch.equal(
                torch.as_tensor(value),
                torch.as_tensor(b['optimizer']['state'][pid][name]))
    assert a['optimizer']['param_groups'][0]['lr'] == \
        b['optimizer']['param_groups'][0]['lr']


def test_test_dev_submission(trained, tiny_shapes, tmp_path):
    """--test-dev on a tiny generated test-dev (image info, no boxes)."""
    import zipfile
    root = tmp_path / 'coco'
    (root / 'annotations').mkdir(parents=True)
    with open(osp.join(tiny_shapes, 'annotations', 'val.json')) as f:
        info = json.load(f)
    info.pop('annotations')
    with open(root / 'annotations' / 'image_info_test-dev2017.json', 'w') as f:
        json.dump(info, f)
    os.symlink(osp.join(tiny_shapes, 'val'), root / 'test2017')
    work, _ = trained
    out_dir = tmp_path / 'work'
    opts = [
        o for o in data_options(tiny_shapes, 4)
        if not o.startswith('test_dataloader.dataset.data_root')
    ]
    out = run_tool('tools/test.py', DEMO, osp.join(work,
                                                   'iter_4.pth'), '--test-dev',
                   'tiny-retina', '--work-dir', str(out_dir), '--cfg-options',
                   *opts, f'test_dataloader.dataset.data_root={root}')
    result = out_dir / 'detections_test-dev2017_tiny-retina_results.json'
    assert 'validated' in out
    with open(result) as f:
        dets = json.load(f)
    image_ids = {img['id'] for img in info['images']}
    assert {d['image_id'] for d in dets} == image_ids
    assert {d['category_id'] for d in dets} <= {1, 2, 3, 4}
    for image_id in image_ids:
        assert sum(d['image_id'] == image_id for d in dets) <= 100
    assert all(len(d['bbox']) == 4 and 0 <= d['score'] <= 1 for d in dets)
    with zipfile.ZipFile(str(result)[:-5] + '.zip') as zf:
        assert zf.namelist() == [result.name]
    bad = run_tool(
        'tools/test.py',
        DEMO,
        osp.join(work, 'iter_4.pth'),
        '--test-dev',
        'bad_name',
        expect_rc=2)
    assert "--test-dev 'bad_name'" in bad


def run_script(*args, env_extra=None):
    env = tool_env()
    env.update(env_extra or {}, PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', *args],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600,
                          env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def test_dist_train_and_test_on_cpu(trained, tiny_shapes, tmp_path):
    """dist_train.sh / dist_test.sh with 2 gloo processes (torchrun)."""
    out = run_script(
        'tools/dist_train.sh',
        DEMO,
        '2',
        '--work-dir',
        str(tmp_path),
        '--auto-scale-lr',
        '--cfg-options',
        *data_options(tiny_shapes, 2),
        'auto_scale_lr.base_batch_size=16',
        env_extra=dict(PORT=str(free_port())))
    assert "dist_cfg=dict(backend='gloo')" in out
    assert "type='CPUAwareDistributedDataParallel'" in out
    # 2 processes x 2 images = 4 of the base batch of 16
    assert 'Scaling the original LR by 0.25' in out
    assert 'Iter(train) [2/2]' in out and 'coco/bbox_mAP_50' in out
    assert osp.isfile(tmp_path / 'iter_2.pth')
    work, _ = trained
    out = run_script(
        'tools/dist_test.sh',
        DEMO,
        osp.join(work, 'iter_4.pth'),
        '2',
        '--work-dir',
        str(tmp_path / 'test'),
        '--cfg-options',
        *data_options(tiny_shapes, 4),
        env_extra=dict(PORT=str(free_port())))
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95' in out


def test_dist_launcher_outside_torchrun_is_a_clear_error(tiny_shapes):
    env = tool_env()
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', DEMO, '--launcher', 'pytorch'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env)
    assert proc.returncode == 2
    assert 'needs RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT' in proc.stderr
    assert 'Traceback' not in proc.stderr
