"""BCCD: where a small RetinaNet starts from, and which pipeline pays off.

The table of docs/own_data.md ("Measured: BCCD"). BCCD holds 364
blood-smear photos of 640 x 480 with the classes RBC, WBC and Platelets, in
the Pascal VOC devkit layout; put it (or a link to it) at ``data/bccd/``
(``--bccd`` names another place). Every row trains the own-data recipe's
small RetinaNet (``configs/own_data/retina_r18_fpn_own_data.py``: R-18,
512 px) on ``trainval`` (292 photos) for the same wall-clock budget
(``--time-budget``, default 1200 s: ``TrainTimeBudgetHook`` makes the
iteration reached then the last), validating on ``test`` (72 photos, COCO
AP and the AP of each class) every 40 iterations, so each row has its
validation-AP curve:

===================  =========================================================
scratch              from scratch, the recipe's pipeline (resize, flip)
overhead             from scratch, the overhead preset (microscope photos
                     have no "up": quarter turns, flips, jitter, crop, colour)
finetuned            the recipe, from a checkpoint of other classes
finetuned_overhead   the overhead preset, from that checkpoint
photo                (on request) from scratch, the photo preset
===================  =========================================================

The checkpoint of other classes is the main job's shapes RetinaNet (the
same architecture, 4 classes; ``--checkpoint``), or, without one, the demo
config trained ``--shapes-iters`` (500) iterations on ``data/shapes``.

The rows train ``--jobs`` (2) at a time, in order, so that each start's
two pipelines run side by side under the same load. Where a start's two
pipelines end within ``--close`` (0.02) AP of each other, both run again
with the next seed (``randomness.seed``), and the verdict uses the mean.
A row whose work dir already holds its final validation is reused
(``--force`` trains it again).

The script runs the repository's own commands, each a subprocess, and
prints them first (``--dry-run`` prints them and stops). Each row's AP
curve comes from its run's ``scalars.json``, its iterations from its last
checkpoint; the figures, the verdicts, each run's wall time and the load
around it go to ``benchmarks/results/bccd.json`` (``--results``), the
curves to ``docs/figures/bccd_val_ap.png``. A wall-clock budget gives fewer
iterations on a busy CPU, so the load is part of the result.

Usage: python benchmarks/bccd.py [--bccd data/bccd] [--rows scratch ...]
       [--time-budget 1200] [--checkpoint PATH] [--jobs 2] [--threads 1]
       [--amp auto] [--work-root DIR] [--results bccd] [--dry-run] [--force]
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, NamedTuple, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import results_io  # noqa: E402

CLASSES = ('RBC', 'WBC', 'Platelets')
SPLITS = ('trainval', 'test')
CONFIGS = 'configs/examples/bccd'
# row: (config, what it is, starts from the checkpoint of other classes)
ROWS = {
    'scratch': (f'{CONFIGS}/retina_r18_fpn_bccd.py',
                'from scratch, the recipe', False),
    'overhead': (f'{CONFIGS}/retina_r18_fpn_bccd_overhead.py',
                 'from scratch, overhead preset', False),
    'finetuned': (f'{CONFIGS}/retina_r18_fpn_bccd_ft.py',
                  'other classes\' checkpoint, the recipe', True),
    'finetuned_overhead': (f'{CONFIGS}/retina_r18_fpn_bccd_ft_overhead.py',
                           'other classes\' checkpoint, overhead preset',
                           True),
    'photo': (f'{CONFIGS}/retina_r18_fpn_bccd_photo.py',
              'from scratch, photo preset', False),
}
DEFAULT_ROWS = ['scratch', 'overhead', 'finetuned', 'finetuned_overhead']
# start: (the recipe's row, the preset's row), compared seed by seed
PAIRS = {
    'from scratch': ('scratch', 'overhead'),
    'from other classes': ('finetuned', 'finetuned_overhead'),
}
SHAPES_CONFIG = 'configs/demo/retina_r18_fpn_shapes.py'
SHAPES_ITERS = 500
FIGURE = 'docs/figures/bccd_val_ap.png'
# Where the configs expect their files (data_root 'data/', relative to the
# repository): the devkit's photos and the converted annotations.
DEVKIT = 'data/bccd'
COCO_DIR = 'data/bccd_coco'
METRICS = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'),
           ('AP75', 'coco/bbox_mAP_75'))


class Step(NamedTuple):
    """One command of the benchmark: its name, argv (from the repository
    root, ``python`` first) and the environment it adds."""
    name: str
    argv: List[str]
    env: Dict[str, str]

    def shell(self) -> str:
        """The command as the page writes it."""
        env = ' '.join(f'{k}={v}' for k, v in self.env.items())
        return (env + ' ' if env else '') + shlex.join(self.argv)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='BCCD: the own-data starts and pipelines at one '
        'wall-clock budget')
    parser.add_argument(
        '--bccd',
        default=DEVKIT,
        help='the BCCD devkit (Annotations/, JPEGImages/, '
        f'ImageSets/Main/); the configs read {DEVKIT}/JPEGImages, so '
        'another place is linked there')
    parser.add_argument(
        '--rows',
        nargs='+',
        choices=list(ROWS),
        default=DEFAULT_ROWS,
        help='the rows to run (default: ' + ' '.join(DEFAULT_ROWS) + ')')
    parser.add_argument(
        '--time-budget',
        type=float,
        default=1200,
        help='seconds of training per row, validations included '
        '(default 1200)')
    parser.add_argument(
        '--checkpoint',
        help='the checkpoint of other classes the finetuned rows load '
        '(the same architecture: the main job\'s work_dirs/main_job/'
        'iter_500.pth); default: the demo config trained --shapes-iters '
        'iterations on data/shapes')
    parser.add_argument(
        '--shapes-iters',
        type=int,
        default=SHAPES_ITERS,
        help=f'iterations of that checkpoint (default {SHAPES_ITERS})')
    parser.add_argument(
        '--seed', type=int, default=0, help='the first seed (default 0)')
    parser.add_argument(
        '--close',
        type=float,
        default=0.02,
        help='a start whose two pipelines end within this AP runs both '
        'again with the next seed (default 0.02; 0: never)')
    parser.add_argument(
        '--amp',
        choices=['auto', 'on', 'off'],
        default='auto',
        help='tools/train.py --amp of every row (default auto: bf16 where '
        'its probe finds it faster)')
    parser.add_argument(
        '--jobs',
        type=int,
        default=2,
        help='rows trained at a time (default 2)')
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='OMP_NUM_THREADS of each run (default 1)')
    parser.add_argument(
        '--work-root',
        default='work_dirs/bccd',
        help='work dirs of the runs (default work_dirs/bccd)')
    results_io.add_argument(parser)
    parser.add_argument(
        '--dry-run', action='store_true', help='print the commands and stop')
    parser.add_argument(
        '--force',
        action='store_true',
        help='convert and train again even where the files exist')
    args = parser.parse_args(argv)
    if args.results is None:
        args.results = 'bccd'
    for flag in ('jobs', 'threads', 'shapes_iters'):
        if getattr(args, flag) < 1:
            parser.error(f'--{flag.replace("_", "-")} must be >= 1, got '
                         f'{getattr(args, flag)}')
    if args.time_budget <= 0:
        parser.error(f'--time-budget must be > 0, got {args.time_budget}')
    if args.close < 0:
        parser.error(f'--close must be >= 0, got {args.close}')
    return args


def convert_steps(args) -> List[Step]:
    """voc2coco.py for trainval and test, into data/bccd_coco/."""
    steps = []
    for split in SPLITS:
        steps.append(
            Step(f'convert {split}', [
                'python', 'tools/dataset_converters/voc2coco.py',
                f'{args.bccd}/Annotations', '--img-root',
                f'{args.bccd}/JPEGImages', '--ids',
                f'{args.bccd}/ImageSets/Main/{split}.txt', '--classes',
                ','.join(CLASSES), '--out', f'{COCO_DIR}/{split}.json'
            ], {}))
    return steps


def other_classes_checkpoint(args) -> str:
    """The checkpoint the finetuned rows load."""
    if args.checkpoint:
        return args.checkpoint
    return f'{args.work_root}/shapes/iter_{args.shapes_iters}.pth'


def shapes_steps(args) -> List[Step]:
    """The shapes dataset (made once) and the demo's run on it."""
    return [
        Step('shapes data',
             ['python', 'tools/make_shapes.py', '--out', 'data/shapes'], {}),
        Step('shapes checkpoint', [
            'python', 'tools/train.py', SHAPES_CONFIG, '--work-dir',
            f'{args.work_root}/shapes', '--amp', args.amp, '--cfg-options',
            f'train_cfg.max_iters={args.shapes_iters}'
        ], {'OMP_NUM_THREADS': str(args.threads)})
    ]


def run_name(row: str, seed: int, first_seed: int) -> str:
    """The row's work-dir name: the row, then ``_seedN`` past the first."""
    return row if seed == first_seed else f'{row}_seed{seed}'


def row_step(args, row: str, seed: Optional[int] = None) -> Step:
    seed = args.seed if seed is None else seed
    argv = [
        'python', 'tools/train.py', ROWS[row][0], '--work-dir',
        f'{args.work_root}/{run_name(row, seed, args.seed)}', '--time-budget',
        f'{args.time_budget:g}', '--amp', args.amp, '--cfg-options',
        f'randomness.seed={seed}'
    ]
    if ROWS[row][2]:
        argv.append(f'load_from={other_classes_checkpoint(args)}')
    return Step(
        run_name(row, seed, args.seed), argv,
        {'OMP_NUM_THREADS': str(args.threads)})


def plan(args) -> List[Step]:
    """Every command of the first seed, in the order they run (rows last,
    ``--jobs`` of them at a time)."""
    steps = convert_steps(args)
    if any(ROWS[row][2] for row in args.rows) and not args.checkpoint:
        steps += shapes_steps(args)
    return steps + [row_step(args, row) for row in args.rows]


def _scalars(work_dir: str) -> List[Dict]:
    """The records of the newest run's ``scalars.json`` in ``work_dir``."""
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    records = []
    for path in files[-1:]:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    return records


def _records(work_dir: str) -> List[Dict]:
    """The COCO records of the newest run in ``work_dir``, in order."""
    return [r for r in _scalars(work_dir) if 'coco/bbox_mAP' in r]


def last_metrics(work_dir: str) -> Optional[Dict[str, float]]:
    """The last COCO record of the newest run in ``work_dir``: AP, AP50,
    AP75 and ``AP <class>`` for each class (mmdet's classwise
    ``coco/<class>_precision``)."""
    records = _records(work_dir)
    if not records:
        return None
    record = records[-1]
    out = {name: record[key] for name, key in METRICS}
    for name in CLASSES:
        out[f'AP {name}'] = record.get(f'coco/{name}_precision')
    return out


def val_curve(work_dir: str) -> List[List[float]]:
    """``[[iteration, AP], ...]`` of every validation of the newest run.

    mmengine's logger records a validation at ``step`` = the epoch (0 in
    an iteration-based loop) unless ``log_metric_by_epoch=False`` (the
    configs set it: then the step is the iteration). For a record at step
    0 the iteration is that of the training record before it (the log
    interval divides the validation interval); the last validation is the
    one after the last iteration (its checkpoint's).
    """
    curve, seen = [], 0
    for record in _scalars(work_dir):
        if 'coco/bbox_mAP' in record:
            curve.append([record.get('step') or seen, record['coco/bbox_mAP']])
        elif 'iter' in record:
            seen = record['iter']
    last = last_iteration(work_dir)
    if curve and last is not None and curve[-1][0] <= last:
        curve[-1][0] = last
    return curve


def last_iteration(work_dir: str) -> Optional[int]:
    """The iteration of the run's last checkpoint (``last_checkpoint``)."""
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        match = re.search(r'iter_(\d+)\.pth', f.read())
    return int(match.group(1)) if match else None


def finished(work_dir: str) -> bool:
    """The run saved its last checkpoint and validated there."""
    curve = val_curve(work_dir)
    return bool(curve) and curve[-1][0] == last_iteration(work_dir)


def run(step: Step, log: str) -> Dict:
    """Runs ``step`` from the repository root (this Python for
    ``python``), its output to ``log``; wall time and the load around it.
    Exits naming the step and the log where it fails."""
    argv = [sys.executable] + step.argv[1:] if step.argv[0] == 'python' \
        else step.argv
    env = dict(os.environ, **step.env)
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        env.pop(key, None)
    os.makedirs(osp.dirname(log) or '.', exist_ok=True)
    load_before = results_io.mark_start()
    start = time.time()
    with open(log, 'w') as f:
        proc = subprocess.run(
            argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f'bccd: {step.name} failed (exit status {proc.returncode})'
                 f': `{step.shell()}`; its output is in {log}')
    return {
        'wall_s': round(wall, 1),
        'load_average': {
            'before': load_before,
            'after': [round(x, 2) for x in os.getloadavg()]
        }
    }


def _log_name(step: Step) -> str:
    return step.name.replace(' ', '_') + '.log'


def link_devkit(bccd: str) -> None:
    """The configs read ``data/bccd/JPEGImages``: link another place
    there (the data stay where they are)."""
    target = osp.join(ROOT, DEVKIT)
    if osp.abspath(osp.join(ROOT, bccd)) == osp.abspath(target):
        return
    if osp.lexists(target):
        if osp.realpath(target) != osp.realpath(osp.join(ROOT, bccd)):
            sys.exit(f'bccd: {DEVKIT} exists and is not {bccd}; remove it '
                     f'or run with --bccd {DEVKIT}')
        return
    os.makedirs(osp.dirname(target), exist_ok=True)
    os.symlink(osp.abspath(osp.join(ROOT, bccd)), target)


def check_devkit(bccd: str) -> None:
    root = osp.join(ROOT, bccd)
    for sub in ['Annotations', 'JPEGImages'
                ] + [f'ImageSets/Main/{s}.txt' for s in SPLITS]:
        if not osp.exists(osp.join(root, sub)):
            sys.exit(f'bccd: --bccd {bccd}: no {sub} there; expected the '
                     'BCCD devkit (Annotations/, JPEGImages/, '
                     'ImageSets/Main/trainval.txt and test.txt)')


def table(rows: Dict[str, Dict]) -> str:
    """The page's table: one line per run, its iterations, final AP, the
    best validation AP on the way, AP50 and each class's AP."""
    header = [
        'start / training pipeline', 'seed', 'iterations of 4 photos',
        'final AP', 'best AP (iteration)', 'AP50'
    ] + [f'AP {c}' for c in CLASSES]
    lines = []
    for r in rows.values():
        m = r['metrics']
        best_iter, best_ap = max(r['curve'], key=lambda p: p[1])
        lines.append([
            r['description'], r['seed'], r['iterations'], f'{m["AP"]:.3f}',
            f'{best_ap:.3f} ({best_iter})', f'{m["AP50"]:.3f}'
        ] + [f'{m[f"AP {c}"]:.3f}' for c in CLASSES])
    return results_io.markdown_table(header, lines)


def compare(rows: Dict[str, Dict], first_seed: int,
            close: float) -> Dict[str, Dict]:
    """For each start: the final AP of its two pipelines (mean over the
    seeds both ran), their difference and what it says. Within ``close``
    of each other the difference is not a verdict."""
    out = {}
    for start, (plain, preset) in PAIRS.items():
        seeds = sorted({
            r['seed']
            for r in rows.values() if r['row'] == plain
        } & {r['seed']
             for r in rows.values() if r['row'] == preset})
        if not seeds:
            continue

        def aps(row: str) -> List[float]:
            return [
                rows[run_name(row, s, first_seed)]['metrics']['AP']
                for s in seeds
            ]

        plain_ap, preset_ap = aps(plain), aps(preset)
        diffs = [b - a for a, b in zip(plain_ap, preset_ap)]
        mean = sum(diffs) / len(diffs)
        if all(abs(d) <= close for d in diffs) or \
                (min(diffs) < 0 < max(diffs)):
            verdict = 'undecided'
        elif mean > 0:
            verdict = 'the overhead preset helps'
        else:
            verdict = 'the recipe\'s pipeline is better'
        out[start] = dict(
            seeds=seeds,
            recipe=plain_ap,
            overhead=preset_ap,
            difference=[round(d, 3) for d in diffs],
            mean_difference=round(mean, 3),
            verdict=verdict)
    return out


def close_starts(rows: Dict[str, Dict], args) -> List[str]:
    """The starts whose two pipelines ended within ``--close`` AP with
    one seed only."""
    out = []
    for start, (plain, preset) in PAIRS.items():
        runs = [r for r in rows.values() if r['row'] in (plain, preset)]
        if len(runs) != 2:
            continue
        if abs(runs[0]['metrics']['AP'] -
               runs[1]['metrics']['AP']) <= args.close:
            out.append(start)
    return out


def plot(rows: Dict[str, Dict], path: str) -> None:
    """The validation-AP curve of every run, one colour per row."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = dict(zip(ROWS, ['C0', 'C1', 'C2', 'C3', 'C4']))
    for name, r in rows.items():
        its, aps = zip(*r['curve'])
        style = '-' if r['seed'] == min(x['seed']
                                        for x in rows.values()) else '--'
        ax.plot(its, aps, style, marker='o', ms=3,
                color=colours[r['row']],
                label=f'{r["description"]} (seed {r["seed"]})')
    ax.set_xlabel('iteration (4 photos each)')
    ax.set_ylabel('COCO AP on test (72 photos)')
    ax.set_title('BCCD: validation AP during training')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(osp.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_rows(steps: List[Step], args, logs: str,
               runs: Dict[str, Dict]) -> None:
    """Trains ``steps`` ``--jobs`` at a time (a finished run is reused
    unless ``--force``)."""
    todo = [
        s for s in steps
        if args.force or not finished(osp.join(ROOT, args.work_root, s.name))
    ]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = pool.map(lambda s: run(s, osp.join(logs, _log_name(s))), todo)
        for step, record in zip(todo, done):
            runs[step.name] = record


def _earlier_timing(args, name: str) -> Dict:
    """A reused run's wall time and load, from the results file that
    timed it (``reused`` says it was not trained by this call)."""
    try:
        earlier = results_io.read_results(args.results)['rows'][name]
        timing = {k: earlier[k] for k in ('wall_s', 'load_average')}
    except (OSError, KeyError, ValueError):
        timing = {}
    return dict(timing, reused=True)


def collect(args, runs: Dict[str, Dict], seeds: Dict[str, List[int]]):
    """Every run's figures, from its work dir."""
    results = {}
    for row in args.rows:
        for seed in seeds[row]:
            name = run_name(row, seed, args.seed)
            work_dir = osp.join(ROOT, args.work_root, name)
            metrics = last_metrics(work_dir)
            if metrics is None:
                sys.exit(f'bccd: {name}: no coco/bbox_mAP in {work_dir}/*/'
                         'vis_data/scalars.json (no detection above the '
                         'score threshold?)')
            results[name] = dict(
                row=row,
                seed=seed,
                config=ROWS[row][0],
                description=ROWS[row][1],
                command=row_step(args, row, seed).shell(),
                iterations=last_iteration(work_dir),
                metrics=metrics,
                curve=val_curve(work_dir),
                **(runs.get(name) or _earlier_timing(args, name)))
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    steps = plan(args)
    for step in steps:
        print(step.shell(), flush=True)
    if args.dry_run:
        return
    check_devkit(args.bccd)
    link_devkit(args.bccd)
    logs = osp.join(ROOT, args.work_root, 'logs')
    runs: Dict[str, Dict] = {}
    rows = [s for s in steps if s.name in args.rows]
    for step in steps:
        if step in rows:
            continue
        out = step.argv[-1]
        if step.name.startswith('convert') and osp.isfile(osp.join(
                ROOT, out)) and not args.force:
            continue
        if step.name == 'shapes checkpoint' and osp.isfile(
                osp.join(ROOT,
                         other_classes_checkpoint(args))) and not args.force:
            continue
        runs[step.name] = run(step, osp.join(logs, _log_name(step)))
    load_before = results_io.mark_start()
    train_rows(rows, args, logs, runs)
    seeds = {row: [args.seed] for row in args.rows}
    results = collect(args, runs, seeds)
    again = close_starts(results, args)
    if again:
        second = args.seed + 1
        extra = []
        for start in again:
            for row in PAIRS[start]:
                seeds[row].append(second)
                extra.append(row_step(args, row, second))
        for step in extra:
            print(step.shell(), flush=True)
        train_rows(extra, args, logs, runs)
        results = collect(args, runs, seeds)
    plot(results, osp.join(ROOT, FIGURE))
    verdicts = compare(results, args.seed, args.close)
    data = dict(
        time_budget_s=args.time_budget,
        jobs=args.jobs,
        threads=args.threads,
        amp=args.amp,
        checkpoint=other_classes_checkpoint(args),
        close=args.close,
        rows=results,
        verdicts=verdicts,
        runs={k: v
              for k, v in runs.items() if k not in results},
        table=table(results),
        figure=FIGURE)
    path = results_io.write_results(
        args.results,
        data, ['python'] + [osp.relpath(__file__, ROOT)] +
        list(sys.argv[1:] if argv is None else argv),
        load_before=load_before)
    print(data['table'])
    for start, v in verdicts.items():
        print(f'{start}: overhead - recipe = {v["mean_difference"]:+.3f} AP '
              f'(seeds {v["seeds"]}): {v["verdict"]}')
    print(f'results: {osp.relpath(path, ROOT)}')


if __name__ == '__main__':
    main()
