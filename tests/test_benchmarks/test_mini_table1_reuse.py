"""A finished mini Table 1 run is reused, not retrained, when the same
benchmark is started again with its work root spelt otherwise (relative to
the repository root, or absolute)."""
import importlib.util
import json
import os
import os.path as osp

import pytest

from tests.conftest import ROOT


def load_benchmark():
    path = osp.join(ROOT, 'benchmarks', 'mini_table1.py')
    spec = importlib.util.spec_from_file_location('mini_table1_bench', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('first_relative', [True, False])
def test_finished_run_reused_across_work_root_spellings(
        tmp_path, monkeypatch, first_relative):
    monkeypatch.chdir(ROOT)  # a relative --work-root is read from here
    bench = load_benchmark()
    rel_root = osp.relpath(str(tmp_path / 'runs'), ROOT)
    abs_root = osp.join(ROOT, rel_root)
    first, second = (rel_root, abs_root) if first_relative else \
        (abs_root, rel_root)
    data = str(tmp_path / 'shapes')

    def finished(root):  # what a completed run wrote into its work dir
        args = bench.parse_args(['--work-root', root, '--methods', 'fl_g2'])
        work_dir = osp.join(root, 'fl_g2_s0')
        options = bench.common_options(args, data, 0) + \
            bench.METHODS['fl_g2'][1]
        cmd = [
            bench.TRAIN, bench.DEMO, '--work-dir', work_dir, '--amp',
            '--cfg-options'
        ] + options
        return args, work_dir, cmd

    args, work_dir, cmd = finished(first)
    run_dir = osp.join(ROOT, work_dir)
    os.makedirs(run_dir)
    with open(osp.join(run_dir, 'run.json'), 'w') as f:
        json.dump(
            dict(
                method='fl_g2',
                seed=0,
                command=cmd,
                status='ok',
                metrics=dict(AP=0.5),
                work_dir=work_dir), f)

    def no_training(*a, **k):
        raise AssertionError('a finished run was trained again')

    monkeypatch.setattr(bench.subprocess, 'run', no_training)
    args2, _, _ = finished(second)
    record = bench.run_method(args2, 'fl_g2', 0, data, amp=True)
    assert record.get('reused') is True
    assert record['metrics'] == dict(AP=0.5)


def test_changed_options_are_not_reused(tmp_path, monkeypatch):
    bench = load_benchmark()
    root = str(tmp_path / 'runs')
    data = str(tmp_path / 'shapes')
    args = bench.parse_args(['--work-root', root, '--iters', '180'])
    work_dir = osp.join(root, 'fl_g2_s0')
    options = bench.common_options(args, data, 0) + bench.METHODS['fl_g2'][1]
    os.makedirs(work_dir)
    with open(osp.join(work_dir, 'run.json'), 'w') as f:
        json.dump(
            dict(
                command=[
                    bench.TRAIN, bench.DEMO, '--work-dir', work_dir, '--amp',
                    '--cfg-options'
                ] + options,
                metrics=dict(AP=0.5)), f)
    calls = []

    class Done:
        returncode, stdout, stderr = 1, '', 'stopped by the test'

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return Done()

    monkeypatch.setattr(bench.subprocess, 'run', fake_run)
    args.iters = 200  # another budget: the old run does not count
    bench.run_method(args, 'fl_g2', 0, data, amp=True)
    assert len(calls) == 1
