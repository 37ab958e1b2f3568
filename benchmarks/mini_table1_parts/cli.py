"""The arguments and the driver of ``benchmarks/mini_table1.py``: make the
data, measure its imbalance, run every (method, seed) -- in ``--jobs``
worker processes of ``--threads`` torch threads, reusing finished runs --
then judge the claims and write the tables and the results file."""
import argparse
import json
import multiprocessing
import os
import os.path as osp
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from typing import Dict, List, Optional, Sequence, Tuple

from benchmarks import imbalance as imbalance_mod
from benchmarks import results_io
from . import claims as claims_mod
from . import run as run_mod
from . import tables
from .methods import ALIASES, CURVE_METHODS, METHODS, QUICK_METHODS, resolve
from .regimes import (OPTIMIZERS, REGIMES, ROOT, load_data, make_data,
                      measure_imbalance, optimizer_line, with_iters)

DEFAULT_SEEDS = (0, 1, 2)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    doc = sys.modules['benchmarks.mini_table1_parts'].__doc__ or ''
    parser = argparse.ArgumentParser(
        description='Mini Table 1: the paper\'s claims at > 1000 negatives '
        'per positive anchor. ' + doc.split('\n')[0])
    parser.add_argument(
        '--regime',
        choices=list(REGIMES),
        default='tiny',
        help='data, model and schedule (default tiny; quick: the smoke run)')
    parser.add_argument(
        '--iters',
        type=int,
        default=None,
        help='iterations of every validated run (default: the regime\'s, '
        '500 for tiny)')
    parser.add_argument(
        '--seeds', type=int, nargs='+', default=list(DEFAULT_SEEDS))
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=list(METHODS) + list(ALIASES),
        default=None,
        help='default: all')
    parser.add_argument(
        '--optimizer',
        choices=OPTIMIZERS,
        default='adamw',
        help='the validated runs\' optimizer (default: the demo\'s AdamW); '
        'the divergence check also runs ce_noprior and ce_a05 for the '
        'first iterations under the other one')
    parser.add_argument(
        '--jobs', type=int, default=2, help='runs in parallel (processes)')
    parser.add_argument(
        '--threads', type=int, default=1, help='torch threads per run')
    parser.add_argument(
        '--work-root',
        default=None,
        help='runs and the data cache (default work_dirs/mini_table1/'
        '<regime>); a finished run found there is reused')
    parser.add_argument(
        '--out',
        default=None,
        help='directory for mini_table1.md / .json '
        'and the loss-curve figure')
    parser.add_argument(
        '--figure',
        default=None,
        help='the loss curves of the divergence check and the gamma sweep '
        '(PNG, its points in a CSV beside it; default: mini_table1.png in '
        '--out)')
    results_io.add_argument(parser)
    parser.add_argument(
        '--force', action='store_true', help='retrain finished runs')
    parser.add_argument(
        '--finished-only',
        action='store_true',
        help='train nothing: the tables of the runs finished so far (e.g. '
        'while the full run goes on)')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='the smoke run: --regime quick, methods '
        f'{" ".join(QUICK_METHODS)}, seed 0 (not a measurement)')
    args = parser.parse_args(argv)
    if args.quick:
        args.regime = 'quick'
        args.seeds = args.seeds[:1] if args.seeds != list(DEFAULT_SEEDS) \
            else [0]
        args.methods = args.methods or list(QUICK_METHODS)
    args.methods = resolve(args.methods or list(METHODS))
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters {args.iters}: expected at least 1')
    if args.jobs < 1 or args.threads < 1:
        parser.error('--jobs and --threads: expected at least 1')
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds {args.seeds}: each seed once')
    args.work_root = osp.abspath(
        args.work_root
        or osp.join(ROOT, 'work_dirs', 'mini_table1', args.regime))
    return args


def curve_variants(optimizer: str) -> List[Tuple[str, str, bool]]:
    """(label, optimizer, paper towers) of the divergence check's extra
    runs: the other optimizer on the regime's model, and the paper's SGD
    on the paper's towers (no GroupNorm)."""
    other = [o for o in OPTIMIZERS if o != optimizer][0]
    return [(other, other, False), ('sgd_nogn', 'sgd', True)]


def plan(args, regime, data: str) -> List[Dict]:
    """Every run: the divergence check (ce_noprior and ce_a05 for the
    first ``regime.curve_iters`` iterations in each of
    :func:`curve_variants`), then the validated runs, seed-major so that an
    interrupted table has whole seeds."""
    jobs = []
    # the short divergence runs first: an interrupted table still has them
    if 'ce_noprior' in args.methods:
        for label, optimizer, paper_towers in curve_variants(args.optimizer):
            curve = replace(regime, gn_groups=0) if paper_towers else regime
            for seed in args.seeds:
                for name in CURVE_METHODS:
                    jobs.append((name, seed, optimizer, curve, False, label))
    for seed in args.seeds:
        for name in args.methods:
            jobs.append(
                (name, seed, args.optimizer, regime, True, args.optimizer))
    out = []
    for name, seed, optimizer, reg, validate, label in jobs:
        iters = reg.iters if validate else reg.curve_iters
        out.append(
            dict(
                regime=reg,
                name=name,
                seed=seed,
                optimizer=optimizer,
                label=label,
                iters=iters,
                validate=validate,
                data=data,
                work_dir=run_mod.work_dir_of(args.work_root, name, seed, label,
                                             validate),
                key=run_mod.run_key(reg, name, seed, optimizer, iters,
                                    validate)))
    return out


def _line(job: Dict, rec: Dict, elapsed: float) -> str:
    m = rec.get('metrics')
    ap = 'n/a' if m is None else f'{100 * m["AP"]:.1f}'
    kind = '' if job['validate'] else f' ({job["label"]} curve)'
    return (f'[{elapsed / 60:5.1f} min] {job["name"]} seed {job["seed"]}'
            f'{kind}: {rec["status"]}, AP {ap}, {rec["wall_s"]:.0f} s, '
            f'{rec["train_s_per_iter"]:.3f} s/iter '
            f'({rec.get("train_cpu_s_per_iter", 0):.3f} s CPU)'
            f'{" (reused)" if rec.get("reused") else ""}'
            f'{"; " + rec["message"] if rec["message"] else ""}')


def execute(args, jobs: List[Dict]) -> List[Dict]:
    """Runs (or reuses) every job; returns their records in job order
    (``--finished-only``: the finished ones; ``jobs`` is cut to them)."""
    start = time.time()
    records: List[Optional[Dict]] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        rec = None if args.force else run_mod.reusable(job['work_dir'],
                                                       job['key'])
        if rec is not None:
            rec['reused'] = True
            records[i] = rec
            print(_line(job, rec, 0.0), flush=True)
        else:
            todo.append(i)
    if args.finished_only:
        jobs[:] = [j for j, r in zip(jobs, records) if r is not None]
        print(f'{len(todo)} runs not finished, left out', flush=True)
        return [r for r in records if r is not None]
    print(
        f'{len(jobs) - len(todo)} runs reused, {len(todo)} to train '
        f'({args.jobs} at a time, {args.threads} thread(s) each)',
        flush=True)
    if args.jobs == 1:
        run_mod.init_worker(args.threads)
        for i in todo:
            records[i] = run_mod.train_one(jobs[i])
            print(_line(jobs[i], records[i], time.time() - start), flush=True)
        return records  # type: ignore
    # spawn: the workers import torch themselves (no fork of a process
    # whose OpenMP pool has run)
    with ProcessPoolExecutor(
            max_workers=args.jobs,
            mp_context=multiprocessing.get_context('spawn'),
            initializer=run_mod.init_worker,
            initargs=(args.threads, )) as pool:
        futures = {pool.submit(run_mod.train_one, jobs[i]): i for i in todo}
        for future in as_completed(futures):
            i = futures[future]
            records[i] = future.result()
            print(_line(jobs[i], records[i], time.time() - start), flush=True)
    return records  # type: ignore


def span_min(records: List[Dict]) -> Optional[float]:
    """Minutes from the first run's start to the last run's end: the wall
    time of the table, whether trained now or reused from earlier
    invocations."""
    ends = [(r['finished_at'], r['wall_s']) for r in records
            if r.get('finished_at') is not None]
    if not ends:
        return None
    return (max(e for e, _ in ends) - min(e - w for e, w in ends)) / 60


def header_line(args, timing: Dict, load_before) -> str:
    """Date, CPU, parallelism, load and wall time of this invocation."""
    import datetime

    from benchmarks.machine import cpu_model

    def load(x):
        return '/'.join(f'{v:.2f}' for v in x) if x else 'unknown'

    try:
        now = list(os.getloadavg())
    except OSError:
        now = None
    date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
    span = timing['span_min'] or 0.0
    missing = '' if not timing['missing'] else \
        f'; {timing["missing"]} planned runs not finished (left out)'

    return (f'{date}, {cpu_model()} ({os.cpu_count()} CPUs), {args.jobs} '
            f'run(s) at a time x {args.threads} torch thread(s); load '
            f'average {load(load_before)} at the start, {load(now)} at the '
            f'end; {timing["trained"]} runs trained, {timing["reused"]} '
            f'reused; wall time {timing["wall_min"]:.1f} min, the runs\' '
            f'{span:.1f} min from the first start to the last end, their CPU '
            f'time {timing["run_cpu_min"]:.1f} min{missing}')


def _slim(rec: Dict, curve_iters: int, keep_curves: bool) -> Dict:
    """A run's record for the results file: the losses of the first
    iterations only where the divergence check reads them."""
    out = {k: v for k, v in rec.items() if k not in ('curves', 'key')}
    out['work_dir'] = osp.relpath(rec['work_dir'], ROOT)
    if keep_curves:
        out['loss_first'] = rec['curves']['loss'][:curve_iters]
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    load_before = results_io.mark_start()
    started = time.time()
    regime = REGIMES[args.regime]
    regime = with_iters(regime, args.iters or regime.iters)
    data = make_data(regime, args.work_root)
    splits = load_data(data)
    measured = measure_imbalance(regime, splits['train'])
    imbalance_text = imbalance_mod.table({f'{regime.name} shapes': measured})
    print(
        f'mini Table 1 ({regime.describe()}): {len(args.methods)} methods'
        f' x seeds {args.seeds}, {optimizer_line(regime, args.optimizer)}'
        f'; data {data}\n{imbalance_text}',
        flush=True)
    jobs = plan(args, regime, data)
    planned = len(jobs)
    records = execute(args, jobs)
    runs: Dict[str, List[Dict]] = {n: [] for n in args.methods}
    curves: Dict[str, Dict[str, List[Dict]]] = {args.optimizer: {}}
    curves.update({v[0]: {} for v in curve_variants(args.optimizer)})
    for job, rec in zip(jobs, records):
        if job['validate']:
            runs[job['name']].append(rec)
        if job['name'] in CURVE_METHODS:
            curves[job['label']].setdefault(job['name'], []).append(rec)
    summary = {n: claims_mod.summarise(runs[n]) for n in args.methods}
    # the default optimizer's curves are the validated runs' own
    verdicts = claims_mod.judge_all(summary, curves)
    first = regime.curve_iters
    record = dict(
        args=dict(
            regime=asdict(regime),
            regime_line=regime.describe(),
            optimizer=args.optimizer,
            optimizer_line=optimizer_line(regime, args.optimizer),
            iters=regime.iters,
            curve_iters=first,
            seeds=args.seeds,
            methods=args.methods,
            overrides={n: METHODS[n].overrides
                       for n in args.methods},
            jobs=args.jobs,
            threads=args.threads,
            quick=args.quick,
            finished_only=args.finished_only,
            runs_planned=planned,
            runs_missing=planned - len(jobs)),
        imbalance=measured,
        summary=summary,
        claims=verdicts,
        verdicts={c['key']: c['verdict']
                  for c in verdicts},
        tables=dict(
            methods=tables.methods_table(summary, regime.eval_points()),
            claims=tables.claims_table(verdicts),
            gamma=tables.gamma_table(summary),
            curves=tables.curves_table(curves, first),
            imbalance=imbalance_text),
        timing=dict(
            wall_s=time.time() - started,
            wall_min=(time.time() - started) / 60,
            trained=sum(1 for r in records if not r.get('reused')),
            missing=planned - len(jobs),
            reused=sum(1 for r in records if r.get('reused')),
            run_wall_s=sum(r['wall_s'] for r in records),
            span_min=span_min(records),
            run_cpu_s=sum(r.get('cpu_s', 0.0) for r in records),
            run_cpu_min=sum(r.get('cpu_s', 0.0) for r in records) / 60,
            train_s_per_iter=claims_mod.finite_mean(
                [r['train_s_per_iter'] for r in records]),
            train_cpu_s_per_iter=claims_mod.finite_mean(
                [r.get('train_cpu_s_per_iter') for r in records])),
        runs={
            n: [_slim(r, first, n in CURVE_METHODS) for r in runs[n]]
            for n in args.methods
        },
        curve_runs={
            o: {
                n: [_slim(r, first, True) for r in rs]
                for n, rs in by.items()
            }
            for o, by in curves.items() if o != args.optimizer
        },
        curve_variants={
            label:
            optimizer_line(regime, optimizer) +
            ('; the paper\'s towers (no GroupNorm)'
             if paper else '; the regime\'s GN towers')
            for label, optimizer, paper in curve_variants(args.optimizer)
        })
    record['header'] = header_line(args, record['timing'], load_before)
    record['readme_line'] = tables.readme_line(verdicts, measured,
                                               asdict(regime), len(args.seeds),
                                               record['timing'])
    text = '\n\n'.join([
        record['header'],
        f'## Mini Table 1 ({regime.describe()}; seeds {args.seeds}; '
        f'{optimizer_line(regime, args.optimizer)}; '
        f'{record["timing"]["wall_s"] / 60:.1f} min)',
        record['tables']['methods'], '### Claims', record['tables']['claims'],
        '### Gamma sweep', record['tables']['gamma'],
        '### Divergence check: loss of the first iterations',
        record['tables']['curves'], '### Imbalance', imbalance_text
    ])
    print(text, flush=True)
    figure = args.figure or (args.out
                             and osp.join(args.out, 'mini_table1.png'))
    if figure:
        figure = tables.figure(curves, summary, figure, first)
        record['figure'] = figure and osp.relpath(figure, ROOT)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(osp.join(args.out, 'mini_table1.md'), 'w') as f:
            f.write(text + '\n')
        with open(osp.join(args.out, 'mini_table1.json'), 'w') as f:
            json.dump(record, f, indent=1)
        print(f'wrote {args.out}/mini_table1.md and mini_table1.json')
    if args.results:
        argv_used = sys.argv if argv is None else [sys.argv[0], *argv]
        path = results_io.write_results(
            args.results, record, argv_used, load_before=load_before)
        print(f'results written to {path}')
    return record
