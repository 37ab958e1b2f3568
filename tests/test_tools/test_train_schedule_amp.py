"""tools/train.py end to end: the images line every run prints, --amp auto
deciding from its (here pre-seeded) probe cache, and --scale-schedule's
refusal in one line. CPU runs (``CUDA_VISIBLE_DEVICES=''``)."""
import os
import subprocess
import sys
import textwrap

import pytest

from projects.focal_retina.engine.cli import load_config
from tests.conftest import ROOT
from tests.test_tools.test_cli import (DEMO, PROBE_HOOK, WITH_PROBE,
                                       data_options, probed_dtypes, tool_env)

pytestmark = pytest.mark.slow


def run_train(args, env, expect_rc):
    proc = subprocess.run([sys.executable, *args],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600,
                          env=env)
    assert proc.returncode == expect_rc, (proc.stdout + proc.stderr)[-4000:]
    return proc


def test_amp_auto_and_images_line(tiny_shapes, tmp_path):
    from projects.focal_retina.engine.amp_probe import probe_key, write_cache
    options = data_options(tiny_shapes, 1)
    # the cache entry the run will look up: its model config (the options
    # change only test_cfg, which the key leaves out) and its torch threads,
    # pinned for the subprocess (this process's may have been changed by
    # an earlier test)
    model = load_config(os.path.join(ROOT, DEMO), None).model
    cache = tmp_path / 'cache'
    path = str(cache / 'focal_retina' / 'amp_probe.json')
    assert write_cache(path, probe_key(model, threads=1), 1.0, 0.5) is None
    env = dict(tool_env(), XDG_CACHE_HOME=str(cache), OMP_NUM_THREADS='1')
    proc = run_train([
        '-c', WITH_PROBE, 'tools/train.py', DEMO, '--work-dir',
        str(tmp_path / 'work'), '--amp', 'auto', '--cfg-options', *options,
        PROBE_HOOK
    ], env, 0)
    out = proc.stdout + proc.stderr
    # bf16 "measured" faster (the seeded cache): trained under bf16
    assert '--amp auto: bf16 autocast on: a training step of 1 x 256 px ' \
        'took 1.000 s in float32, 0.500 s in bf16' in out
    assert '(cached ' in out and path in out
    assert probed_dtypes(out, 1) == "['torch.bfloat16']"
    # 1 iteration of 2 images against the demo file's 500 of 8: 2 / 4000
    assert ('images: 2 per iteration (1 process x 2) x 1 iteration = 2; '
            '0.0005 (1/2000) of the 8 x 500 = 4,000 of ' + DEMO +
            ' (train_dataloader.batch_size x train_cfg.max_iters)') in out
    # the lines are in the run's log file too
    (log, ) = [
        os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'work')
        for f in fs if f.endswith('.log')
    ]
    with open(log) as f:
        text = f.read()
    assert '--amp auto: bf16 autocast on' in text and 'images: 2 per' in text


def test_scale_schedule_refusal_is_one_line(tmp_path):
    config = tmp_path / 'exp_lr.py'
    config.write_text(
        textwrap.dedent(f"""\
        _base_ = '{os.path.join(ROOT, DEMO)}'
        auto_scale_lr = dict(base_batch_size=16)
        param_scheduler = [
            dict(type='ExponentialLR', gamma=0.999, by_epoch=False)]
        """))
    proc = run_train([
        'tools/train.py',
        str(config), '--scale-schedule', '--work-dir',
        str(tmp_path / 'w')
    ], tool_env(), 2)
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f'train.py: error: --scale-schedule: {config}: param_scheduler[0] '
        '(ExponentialLR, by_epoch=False) counts iterations in a way that '
        'cannot be rescaled; write it with BudgetLinearLR / '
        'BudgetMultiStepLR (fractions of the run) or scale it yourself with '
        '--cfg-options'
    ], proc.stderr
