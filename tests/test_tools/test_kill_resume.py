"""kill -9 of a training run, then ``--resume``: the run ends with the same
weights as one that was never interrupted, in one process and with two
gloo processes under torchrun (CPU; deterministic settings)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from projects.focal_retina.engine import safe_load
from tests.conftest import ROOT, free_port
from tests.test_tools.test_cli import data_options, tool_env

pytestmark = pytest.mark.slow
DEMO = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py')


def config(tmp_path, marker=None):
    """The demo config, with the kill hook when ``marker`` is given."""
    path = tmp_path / ('kill.py' if marker else 'plain.py')
    text = f'_base_ = {DEMO!r}\n'
    if marker:
        text += (
            "custom_imports = dict(imports=['projects.focal_retina', "
            "'tests.test_tools.kill_hook'], allow_failed_imports=False)\n"
            f"default_hooks = dict(killer=dict(type='KillOnceAtIter', at=3, "
            f"marker={str(marker)!r}))\n")
    path.write_text(text)
    return str(path)


def train(cfg, work, opts, procs=1, resume=False):
    args = ['--work-dir', str(work), *(['--resume'] if resume else []),
            '--cfg-options', *opts]
    if procs == 1:
        cmd = [sys.executable, 'tools/train.py', cfg, *args]
    else:
        cmd = ['bash', 'tools/dist_train.sh', cfg, str(procs), *args]
    env = tool_env()
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PORT=str(free_port()))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize('procs', [1, 2])
def test_kill_9_then_resume_matches_an_uninterrupted_run(
        tiny_shapes, tmp_path, procs):
    opts = data_options(tiny_shapes, 4) + [
        'default_hooks.checkpoint.interval=2', 'train_cfg.val_interval=100',
        'randomness.deterministic=True', 'train_dataloader.batch_size=1'
    ]
    rc, out = train(config(tmp_path), tmp_path / 'ref', opts, procs)
    assert rc == 0, out[-3000:]
    marker = tmp_path / 'killed'
    killing = config(tmp_path, marker)
    rc, out = train(killing, tmp_path / 'run', opts, procs)
    assert rc != 0 and marker.exists(), out[-3000:]
    assert 'Iter(train) [3/4]' in out and 'Iter(train) [4/4]' not in out
    assert osp.isfile(tmp_path / 'run' / 'iter_2.pth')
    rc, out = train(killing, tmp_path / 'run', opts, procs, resume=True)
    assert rc == 0, out[-3000:]
    assert 'resumed epoch: 0, iter: 2' in out
    ref = safe_load(str(tmp_path / 'ref' / 'iter_4.pth'))['state_dict']
    got = safe_load(str(tmp_path / 'run' / 'iter_4.pth'))['state_dict']
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
