"""--amp auto: mixed precision decided by a measured probe, not a CPU flag.

The timings are faked (a ``measure`` returning fixed seconds), so the tests
check the decision rule, the cache and the printed line, not this machine's
CPU; one test runs the real timing loop on a tiny model to show it yields
two positive medians.
"""
import json
import os.path as osp
import re
import shlex

import pytest
import torch
import torch.nn as nn

from projects.focal_retina.engine import amp_probe
from projects.focal_retina.engine.amp_probe import (amp_decision, probe_key,
                                                    resolve_amp, time_steps)
from tests.conftest import ROOT

MODEL = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=18))


def fake(fp32_s: float, bf16_s: float):
    calls = []

    def measure():
        calls.append(1)
        return fp32_s, bf16_s

    return measure, calls


def test_fp32_faster_turns_amp_off(tmp_path):
    # the AVX-512 BF16 CPU without AMX: bf16 slower
    measure, calls = fake(0.92, 1.15)
    d = amp_decision(MODEL, 'cpu', measure, str(tmp_path / 'c.json'))
    assert d.use_amp is False and calls == [1] and not d.cached
    assert d.line.startswith('--amp auto: bf16 autocast off, float32:')
    assert '0.920 s in float32, 1.150 s in bf16' in d.line
    assert 'probed now' in d.line


def test_bf16_faster_turns_amp_on(tmp_path):
    measure, _ = fake(1.0, 0.5)
    d = amp_decision(MODEL, 'cpu', measure, str(tmp_path / 'c.json'))
    assert d.use_amp is True
    assert d.line.startswith('--amp auto: bf16 autocast on:')
    assert '(0.50x; bf16 needs < 0.95x)' in d.line


def test_within_noise_keeps_float32(tmp_path):
    measure, _ = fake(1.0, 0.97)  # 3 % faster: not worth the precision
    assert not amp_decision(MODEL, 'cpu', measure, str(
        tmp_path / 'c.json')).use_amp


def test_cache_hit_skips_the_probe(tmp_path):
    path = str(tmp_path / 'sub' / 'amp_probe.json')
    measure, calls = fake(1.0, 0.5)
    first = amp_decision(MODEL, 'cpu', measure, path)
    again = amp_decision(MODEL, 'cpu', measure, path)
    assert calls == [1]  # measured once
    assert again.cached and again.use_amp == first.use_amp
    assert (again.fp32_s, again.bf16_s) == (1.0, 0.5)
    assert re.search(r'\(cached \d{4}-\d\d-\d\d in ', again.line)
    with open(path) as f:
        (entry, ) = json.load(f)['entries'].values()
    assert entry['key'] == probe_key(MODEL)
    assert entry['key']['threads'] == torch.get_num_threads()


def test_cache_is_per_model_threads_and_input(tmp_path, monkeypatch):
    path = str(tmp_path / 'c.json')
    measure, calls = fake(1.0, 0.5)
    amp_decision(MODEL, 'cpu', measure, path)
    other = dict(MODEL, backbone=dict(type='ResNet', depth=50))
    amp_decision(other, 'cpu', measure, path)
    amp_decision(MODEL, 'cpu', measure, path, size=128)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 97)
    amp_decision(MODEL, 'cpu', measure, path)
    assert len(calls) == 4
    # a score threshold (test_cfg) does not change the step: same entry
    amp_decision(
        dict(MODEL, test_cfg=dict(score_thr=0.0)), 'cpu', measure, path)
    assert len(calls) == 4


def test_unreadable_cache_is_probed_again(tmp_path):
    path = tmp_path / 'c.json'
    path.write_text('{not json')
    measure, calls = fake(1.0, 2.0)
    assert not amp_decision(MODEL, 'cpu', measure, str(path)).use_amp
    assert calls == [1]
    assert json.loads(path.read_text())['entries']


def test_failed_probe_keeps_float32_and_says_why(tmp_path):

    def broken():
        raise NotImplementedError('no tensor mode')

    d = amp_decision(MODEL, 'cpu', broken, str(tmp_path / 'c.json'))
    assert not d.use_amp
    assert 'the probe failed (NotImplementedError: no tensor mode)' in d.line
    assert not (tmp_path / 'c.json').exists()  # nothing cached


def test_cuda_is_float16_without_probing(tmp_path):
    measure, calls = fake(1.0, 0.5)
    d = amp_decision(MODEL, 'cuda', measure, str(tmp_path / 'c.json'))
    assert d.use_amp and calls == [] and 'float16' in d.line
    assert not (tmp_path / 'c.json').exists()


def test_resolve_modes(tmp_path):
    measure, calls = fake(1.0, 0.5)
    path = str(tmp_path / 'c.json')
    assert resolve_amp('on', MODEL, 'cpu', measure, path) == (True, None)
    assert resolve_amp('off', MODEL, 'cpu', measure, path) == (False, None)
    assert calls == []
    use, line = resolve_amp('auto', MODEL, 'cpu', measure, path)
    assert use and line.startswith('--amp auto: bf16 autocast on')
    with pytest.raises(ValueError, match='--amp'):
        resolve_amp('bf16', MODEL, 'cpu', measure, path)


def test_default_cache_file_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert amp_probe.cache_file() == str(tmp_path / 'focal_retina' /
                                         'amp_probe.json')


class TinyDetector(nn.Module):
    """A conv net answering mmdet's ``model(inputs, mode='tensor')``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 3, padding=1)
        self.dtypes = []

    def forward(self, inputs, mode='tensor'):
        assert mode == 'tensor'
        feat = self.conv(inputs)
        self.dtypes.append(feat.dtype)
        return ([self.head(feat)], [feat])


def test_time_steps_runs_both_precisions():
    model = TinyDetector()
    fp32_s, bf16_s = time_steps(
        model, batch=1, size=16, min_pairs=2, max_pairs=2)
    assert fp32_s > 0 and bf16_s > 0
    # 1 warm-up + 2 timed steps in each precision
    assert model.dtypes.count(torch.float32) == 3
    assert model.dtypes.count(torch.bfloat16) == 3
    assert all(p.grad is None for p in model.parameters())


def main_job_train_argv() -> list:
    """The tools/train.py arguments of tools/run_main_job.sh (its
    variables filled in, no extra arguments)."""
    with open(osp.join(ROOT, 'tools', 'run_main_job.sh')) as f:
        script = f.read()
    (line, ) = [
        ln for ln in script.splitlines()
        if 'tools/train.py' in ln and not ln.lstrip().startswith('#')
    ]
    line = line.replace('"$@"', '').replace('"$PY"', 'python')
    for name, value in (('CONFIG', 'configs/demo/retina_r18_fpn_shapes.py'),
                        ('WORK', 'work_dirs/main_job')):
        line = line.replace(f'"${name}"', value)
    assert '$' not in line, line
    return shlex.split(line)[2:]


def test_main_job_uses_amp_auto_and_prints_its_choice(tmp_path, capsys):
    import importlib.util
    argv = main_job_train_argv()
    with open(osp.join(ROOT, 'tools', 'run_main_job.sh')) as f:
        assert not re.search(r'avx512_bf16|amx_bf16', f.read())
    spec = importlib.util.spec_from_file_location(
        'train_tool', osp.join(ROOT, 'tools', 'train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    args = train.parse_args(argv)
    assert args.amp == 'auto'
    # what train.py then calls, with the probe faked either way
    for (fp32_s, bf16_s), verdict in (((0.92, 1.15), 'off, float32'),
                                      ((1.0, 0.5), 'on')):
        use, line = resolve_amp(args.amp, MODEL, 'cpu',
                                fake(fp32_s, bf16_s)[0],
                                str(tmp_path / f'{verdict}.json'))
        assert use == (verdict == 'on')
        assert line.startswith(f'--amp auto: bf16 autocast {verdict}')
    # a bare --amp keeps meaning "on", before or after the config
    assert train.parse_args(['--amp', 'c.py']).amp == 'on'
    assert train.parse_args(['c.py', '--amp']).amp == 'on'
    assert train.parse_args(['c.py', '--amp', 'off']).amp == 'off'
    assert train.parse_args(argv + ['--amp', 'off']).amp == 'off'
