"""BCCD: where a small RetinaNet starts from, at a small wall-clock budget.

The table of docs/own_data.md ("Measured: BCCD"). BCCD holds 364
blood-smear photos of 640 x 480 with the classes RBC, WBC and Platelets, in
the Pascal VOC devkit layout; put it (or a link to it) at ``data/bccd/``
(``--bccd`` names another place). Every row trains the own-data recipe's
small RetinaNet (``configs/own_data/retina_r18_fpn_own_data.py``: R-18,
512 px) on ``trainval`` (292 photos) for the same wall-clock budget
(``--time-budget``, default 360 s: ``TrainTimeBudgetHook`` makes the
iteration reached then the last), then evaluates the last iteration on
``test`` (72 photos, COCO AP and the AP of each class):

=========  ===============================================================
scratch    from scratch, the recipe's pipeline (resize, left-right flip)
photo      from scratch, the photo preset (scale jitter, crop, colour)
overhead   from scratch, the overhead preset (the photo preset + turns)
finetuned  the recipe, fine-tuned from the shapes checkpoint (``load_from``)
=========  ===============================================================

Their configs are ``configs/examples/bccd/``. The script runs the
repository's own commands, each a subprocess, and prints them first
(``--dry-run`` prints them and stops):

1. ``tools/dataset_converters/voc2coco.py`` writes ``trainval`` and
   ``test`` as COCO json to ``data/bccd_coco/`` (outside the devkit);
2. the shapes checkpoint the ``finetuned`` row starts from: the main job's
   demo RetinaNet (``configs/demo/retina_r18_fpn_shapes.py``, the same
   architecture, 4 classes) after ``--shapes-iters`` (60) iterations on
   ``data/shapes`` (``tools/make_shapes.py``, made once);
3. ``tools/train.py`` for each row, ``--jobs`` (2) at a time with
   ``OMP_NUM_THREADS=--threads`` (1) each.

Each row's AP comes from its run's final validation (``scalars.json``),
its iterations from its last checkpoint. The figures, each run's wall time
and the load average around each run go to
``benchmarks/results/bccd.json`` (``--results``; the page quotes that
file). A wall-clock budget gives fewer iterations on a busy CPU, so the
load is part of the result.

Usage: python benchmarks/bccd.py [--bccd data/bccd] [--rows scratch ...]
       [--time-budget 360] [--jobs 2] [--threads 1] [--work-root DIR]
       [--results bccd] [--dry-run] [--force]
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
# row: (config, what it is)
ROWS = {
    'scratch':
    (f'{CONFIGS}/retina_r18_fpn_bccd.py', 'from scratch, the recipe'),
    'photo':
    (f'{CONFIGS}/retina_r18_fpn_bccd_photo.py', 'from scratch, photo preset'),
    'overhead': (f'{CONFIGS}/retina_r18_fpn_bccd_overhead.py',
                 'from scratch, overhead preset'),
    'finetuned': (f'{CONFIGS}/retina_r18_fpn_bccd_ft.py',
                  'fine-tuned from the shapes checkpoint'),
}
SHAPES_CONFIG = 'configs/demo/retina_r18_fpn_shapes.py'
SHAPES_ITERS = 60
DEFAULT_SHAPES = f'work_dirs/bccd/shapes/iter_{SHAPES_ITERS}.pth'
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
        description='BCCD: the own-data starts at one wall-clock budget')
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
        default=list(ROWS),
        help='the rows to run (default: all four)')
    parser.add_argument(
        '--time-budget',
        type=float,
        default=360,
        help='seconds of training per row (default 360)')
    parser.add_argument(
        '--shapes-iters',
        type=int,
        default=SHAPES_ITERS,
        help='iterations of the shapes checkpoint (default 60)')
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


def shapes_checkpoint(args) -> str:
    return f'{args.work_root}/shapes/iter_{args.shapes_iters}.pth'


def shapes_steps(args) -> List[Step]:
    """The shapes dataset (made once) and the demo's short run on it."""
    return [
        Step('shapes data',
             ['python', 'tools/make_shapes.py', '--out', 'data/shapes'], {}),
        Step('shapes checkpoint', [
            'python', 'tools/train.py', SHAPES_CONFIG, '--work-dir',
            f'{args.work_root}/shapes', '--cfg-options',
            f'train_cfg.max_iters={args.shapes_iters}'
        ], {'OMP_NUM_THREADS': str(args.threads)})
    ]


def row_step(args, row: str) -> Step:
    argv = [
        'python', 'tools/train.py', ROWS[row][0], '--work-dir',
        f'{args.work_root}/{row}', '--time-budget', f'{args.time_budget:g}'
    ]
    # The config loads work_dirs/bccd/shapes/iter_60.pth; another work
    # root or length is named on the command line.
    if row == 'finetuned' and shapes_checkpoint(args) != DEFAULT_SHAPES:
        argv += ['--cfg-options', f'load_from={shapes_checkpoint(args)}']
    return Step(row, argv, {'OMP_NUM_THREADS': str(args.threads)})


def plan(args) -> List[Step]:
    """Every command, in the order they run (rows last, ``--jobs`` of
    them at a time)."""
    steps = convert_steps(args)
    if 'finetuned' in args.rows:
        steps += shapes_steps(args)
    return steps + [row_step(args, row) for row in args.rows]


def last_metrics(work_dir: str) -> Optional[Dict[str, float]]:
    """The last COCO record of the newest run in ``work_dir``: AP, AP50,
    AP75 and ``AP <class>`` for each class (mmdet's classwise
    ``coco/<class>_precision``)."""
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    record = None
    for path in files[-1:]:
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if 'coco/bbox_mAP' in entry:
                    record = entry
    if record is None:
        return None
    out = {name: record[key] for name, key in METRICS}
    for name in CLASSES:
        out[f'AP {name}'] = record.get(f'coco/{name}_precision')
    return out


def last_iteration(work_dir: str) -> Optional[int]:
    """The iteration of the run's last checkpoint (``last_checkpoint``)."""
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        match = re.search(r'iter_(\d+)\.pth', f.read())
    return int(match.group(1)) if match else None


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
    """The page's table: iterations, AP, AP50 and each class's AP."""
    header = [
        'start / training pipeline', 'config', 'iterations of 4 '
        'photos', 'AP', 'AP50'
    ] + [f'AP {c}' for c in CLASSES]
    lines = []
    for name, r in rows.items():
        m = r['metrics']
        lines.append([
            r['description'], f'`{osp.basename(r["config"])}`', r['iterations']
        ] + [
            f'{m[k]:.3f}'
            for k in ['AP', 'AP50'] + [f'AP {c}' for c in CLASSES]
        ])
    return results_io.markdown_table(header, lines)


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
    rows = [s for s in steps if s.name in ROWS]
    for step in steps:
        if step in rows:
            continue
        out = step.argv[-1]
        if step.name.startswith('convert') and osp.isfile(osp.join(
                ROOT, out)) and not args.force:
            continue
        if step.name == 'shapes checkpoint' and osp.isfile(
                osp.join(ROOT, shapes_checkpoint(args))) and not args.force:
            continue
        runs[step.name] = run(step, osp.join(logs, _log_name(step)))
    load_before = results_io.mark_start()
    with ThreadPoolExecutor(args.jobs) as pool:
        done = pool.map(lambda s: run(s, osp.join(logs, _log_name(s))), rows)
        for step, record in zip(rows, done):
            runs[step.name] = record
    results = {}
    for row in args.rows:
        work_dir = osp.join(ROOT, args.work_root, row)
        metrics = last_metrics(work_dir)
        if metrics is None:
            sys.exit(f'bccd: {row}: no coco/bbox_mAP in {work_dir}/*/'
                     'vis_data/scalars.json (no detection above the score '
                     'threshold?)')
        results[row] = dict(
            config=ROWS[row][0],
            description=ROWS[row][1],
            command=row_step(args, row).shell(),
            iterations=last_iteration(work_dir),
            metrics=metrics,
            **runs[row])
    data = dict(
        time_budget_s=args.time_budget,
        jobs=args.jobs,
        threads=args.threads,
        shapes_iters=args.shapes_iters,
        rows=results,
        runs={
            k: v
            for k, v in runs.items() if k not in ROWS
        },
        table=table(results))
    path = results_io.write_results(
        args.results,
        data, ['python'] + [osp.relpath(__file__, ROOT)] +
        list(sys.argv[1:] if argv is None else argv),
        load_before=load_before)
    print(data['table'])
    print(f'results: {osp.relpath(path, ROOT)}')


if __name__ == '__main__':
    main()
