"""A finished mini Table 1 run is reused, not retrained, when the same run
is asked for again, and retrained when anything that decides its result
(iterations, seed, the method's overrides, the loop) changed."""
import importlib.util
import json
import os
import os.path as osp
from dataclasses import replace

from tests.conftest import ROOT


def load():
    path = osp.join(ROOT, 'benchmarks', 'mini_table1.py')
    spec = importlib.util.spec_from_file_location('mini_table1_reuse', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from benchmarks.mini_table1_parts import cli, regimes, run
    return module, cli, regimes, run


def finish(run, job):
    """What train_one leaves behind: run.json with the job's key."""
    os.makedirs(job['work_dir'], exist_ok=True)
    with open(osp.join(job['work_dir'], 'run.json'), 'w') as f:
        json.dump(
            dict(
                key=job['key'],
                method=job['name'],
                seed=job['seed'],
                status='ok',
                message='',
                metrics=dict(AP=0.5, AP50=0.6, AP75=0.4),
                wall_s=1.0,
                train_s_per_iter=0.1), f)


def test_finished_runs_are_reused_changed_ones_retrained(
        tmp_path, monkeypatch):
    bench, cli, regimes, run = load()
    args = bench.parse_args([
        '--work-root',
        str(tmp_path), '--methods', 'fl_g2', 'dr', '--seeds', '0', '--jobs',
        '1'
    ])
    regime = regimes.REGIMES['tiny']
    jobs = cli.plan(args, regime, 'D')
    assert [j['name'] for j in jobs] == ['fl_g2', 'dr']  # no ce_noprior
    for job in jobs:
        finish(run, job)
    trained = []

    def fake_train(job):
        trained.append((job['name'], job['iters']))
        return dict(
            status='ok',
            message='',
            metrics=None,
            wall_s=0.0,
            train_s_per_iter=0.0)

    monkeypatch.setattr(run, 'train_one', fake_train)
    monkeypatch.setattr(run, 'init_worker', lambda threads: None)
    records = cli.execute(args, jobs)
    assert trained == []
    assert all(r['reused'] and r['metrics']['AP'] == 0.5 for r in records)

    # another budget: the same folders, other keys
    longer = cli.plan(args, replace(regime, iters=600), 'D')
    assert [j['work_dir'] for j in longer] == [j['work_dir'] for j in jobs]
    cli.execute(args, longer)
    assert trained == [('fl_g2', 600), ('dr', 600)]

    # another seed's key differs; --force retrains a finished run
    assert run.run_key(regime, 'fl_g2', 1, 'adamw', 500, True) != \
        jobs[0]['key']
    trained.clear()
    args.force = True
    cli.execute(args, jobs)
    assert trained == [('fl_g2', 500), ('dr', 500)]


def test_key_holds_the_overrides_and_the_loop(monkeypatch):
    _, _, regimes, run = load()
    regime = regimes.REGIMES['tiny']
    key = run.run_key(regime, 'fl_g2', 0, 'adamw', 500, True)
    assert key['overrides'] == {
        'model.bbox_head.loss_cls.gamma': 2.0,
        'model.bbox_head.loss_cls.alpha': 0.25
    }
    assert key['regime']['img_size'] == 128
    monkeypatch.setattr(run, 'LOOP_VERSION', run.LOOP_VERSION + 1)
    assert run.run_key(regime, 'fl_g2', 0, 'adamw', 500, True) != key
