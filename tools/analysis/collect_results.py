"""Measured AP of trained configs beside the paper's, as a Markdown table.

    python tools/analysis/collect_results.py [WORK_DIR ...]
        [--work-root work_dirs] [--map CONFIG=WORK_DIR ...]
        [--out results.md] [--json results.json] [--all]

Each work dir is matched to its row of ``configs/paper_settings.csv`` (via
``projects.focal_retina.utils.paper_settings.load_table``) by the config
mmengine dumps into it (``WORK_DIR/<config name>.py``); a config that
reproduces several paper cells (e.g. the ablation default is also Table
1b's gamma 2 and Table 1e's 600 px) is listed with each of them; when
configs of different folders share a file name, the one whose settings equal
the dumped config's (``resolve_settings``) is taken;
``--map CONFIG=WORK_DIR`` states a match outright. The AP is the newest
``tools/test.py`` result in the work dir, else the last validation during
training (see logs.py), times 100.

Writes the table (config | paper AP | our AP | delta | measured from) and,
with ``--json``, ``{config path: AP}`` for ``python tools/paper_table.py
--results FILE --write``. Test-dev rows are scored by the COCO server:
pass its AP with ``--ap CONFIG=VALUE``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

# yapf: disable
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from figure_io import ROOT, fail  # noqa: E402
from logs import latest_metric  # noqa: E402

from benchmarks import results_io  # noqa: E402
from projects.focal_retina.utils.paper_settings import (  # noqa: E402
    load_table, resolve_settings)

# yapf: enable

Result = Tuple[float, str]  # (AP in percent, where it came from)


def dumped_config(work_dir: str) -> Optional[str]:
    """The config mmengine's Runner dumped into ``work_dir`` (newest)."""
    found = sorted(glob.glob(osp.join(work_dir, '*.py')), key=osp.getmtime)
    return found[-1] if found else None


def match_row(work_dir: str, rows: List[dict]) -> Tuple[Optional[dict], str]:
    """The settings-table row a work dir belongs to, or (None, why)."""
    dumped = dumped_config(work_dir)
    if dumped is None:
        return None, 'no config dumped in it'
    name = osp.basename(dumped)
    candidates = [r for r in rows if osp.basename(r['config']) == name]
    if not candidates:
        return None, f'{name} is not a config of the paper table'
    if len({r['config'] for r in candidates}) == 1:
        # One config, maybe several paper cells: its minival cell (an AP
        # measured here is a minival one: test-dev has no public labels).
        return next((r for r in candidates if r['split'] == 'minival'),
                    candidates[0]), ''
    try:
        from projects.focal_retina.engine.cli import read_config
        settings = resolve_settings(read_config(dumped))
    except Exception as exc:  # a config of an older version of the code
        return None, f'cannot resolve {dumped}: {exc}'
    same = [
        r for r in candidates if all(r[k] == v for k, v in settings.items())
    ]
    if len(same) > 1:
        # Equal configs (the ablation default and Table 1e's 600 px row):
        # a locally measured AP is a minival one (test-dev has no labels).
        same = [r for r in same if r['split'] == 'minival'] or same
    if len(same) == 1:
        return same[0], ''
    names = ', '.join(r['config'] for r in candidates)
    return None, (f'{name} matches {len(same) or "none"} of {names}; '
                  'use --map CONFIG=WORK_DIR')


def measured(work_dir: str, metric: str) -> Optional[Result]:
    """AP (percent) of a work dir and its source, or None."""
    found = latest_metric(work_dir, metric)
    if found is None:
        return None
    value, source = found
    # mmdet's CocoMetric logs fractions (0.340); the paper writes 34.0.
    return (100 * value if abs(value) <= 1 else value), source


def parse_pairs(pairs: List[str], what: str) -> List[Tuple[str, str]]:
    out = []
    for pair in pairs or []:
        key, sep, value = pair.partition('=')
        if not sep or not key or not value:
            fail(f'{what} {pair!r}: expected CONFIG=VALUE')
        out.append((key, value))
    return out


def collect(args, rows: List[dict]) -> Tuple[Dict[str, Result], dict]:
    """{config path: (AP, source)} of the table's configs, and {work dir:
    (AP, source)} of the work dirs of other configs (no paper AP)."""
    by_config = {r['config']: r for r in rows}
    results: Dict[str, Result] = {}
    others: Dict[str, Result] = {}
    work_dirs = list(args.work_dirs)
    if args.work_root:
        work_dirs += sorted(
            d for d in glob.glob(osp.join(args.work_root, '*'))
            if osp.isdir(d))
    matched = []
    for config, work_dir in parse_pairs(args.map, '--map'):
        if config not in by_config:
            fail(f'--map {config!r}: not a config of the paper table')
        matched.append((config, work_dir))
    for work_dir in work_dirs:
        row, why = match_row(work_dir, rows)
        found = measured(work_dir, args.metric) if row is None else None
        if row is None and found is not None:
            others[work_dir] = found
            print(f'{work_dir}: {why}; listed without a paper AP')
        elif row is None:
            print(f'skipped {work_dir}: {why}')
        else:
            matched.append((row['config'], work_dir))
    for config, work_dir in matched:
        if not osp.isdir(work_dir):
            fail(f'work dir {work_dir!r} does not exist')
        found = measured(work_dir, args.metric)
        if found is None:
            print(f'skipped {work_dir}: no {args.metric} logged yet')
        else:
            results[config] = (found[0], f'{found[1]} in {work_dir}')
    for config, value in parse_pairs(args.ap, '--ap'):
        if config not in by_config:
            fail(f'--ap {config!r}: not a config of the paper table')
        try:
            results[config] = (float(value), 'given (--ap)')
        except ValueError:
            fail(f'--ap {config}={value!r}: expected a number')
    return results, others


def markdown(rows: List[dict], results: Dict[str, Result], others: dict,
             show_all: bool) -> str:
    lines = [
        '| config | paper AP | our AP | delta | measured from |',
        '|---|---|---|---|---|'
    ]
    for row in rows:
        ours = results.get(row['config'])
        if ours is None and not show_all:
            continue
        paper = float(row['paper_ap']) if row['paper_ap'] else None
        paper_txt = (f'{paper:.1f} ({row["table"]}: {row["row"]}, '
                     f'{row["split"]})' if paper is not None else '—')
        ours_txt = f'{ours[0]:.1f}' if ours else '—'
        delta = f'{ours[0] - paper:+.1f}' if ours and paper is not None \
            else '—'
        lines.append(f'| `{row["config"]}` | {paper_txt} | {ours_txt} | '
                     f'{delta} | {ours[1] if ours else ""} |')
    for work_dir, (ap, source) in others.items():
        name = osp.basename(dumped_config(work_dir))
        label = f'`{name}` ({osp.basename(osp.normpath(work_dir))})'
        lines.append(f'| {label} | — | {ap:.1f} | — | {source} in '
                     f'{work_dir} |')
    return '\n'.join(lines) + '\n'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='*')
    parser.add_argument('--work-root', help='take every folder in it')
    parser.add_argument('--map', nargs='+', metavar='CONFIG=WORK_DIR')
    parser.add_argument(
        '--ap',
        nargs='+',
        metavar='CONFIG=VALUE',
        help='AP from elsewhere (e.g. the test-dev server)')
    parser.add_argument('--metric', default='coco/bbox_mAP')
    parser.add_argument(
        '--table', default=osp.join(ROOT, 'configs', 'paper_settings.csv'))
    parser.add_argument('--out', help='write the Markdown table here too')
    parser.add_argument('--json', help='write {config: AP} here')
    parser.add_argument(
        '--all',
        action='store_true',
        help='list the rows without a result too')
    results_io.add_argument(parser)
    args = parser.parse_args()
    if not (args.work_dirs or args.work_root or args.map or args.ap):
        parser.error('give work dirs, --work-root, --map or --ap')
    return args


def main() -> None:
    args = parse_args()
    try:
        rows = load_table(args.table)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    results, others = collect(args, rows)
    table = markdown(rows, results, others, args.all)
    print(table, end='')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(table)
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump({
                c: round(r[0], 2)
                for c, r in results.items()
            },
                      f,
                      indent=2)
        print(f'{{config: AP}} written to {args.json} (for python '
              f'tools/paper_table.py --results {args.json})')
    if args.results:
        path = results_io.write_results(
            args.results,
            dict(
                configs={
                    c: dict(ap=r[0], source=r[1])
                    for c, r in results.items()
                },
                # other configs' work dirs, by folder name
                work_dirs={
                    osp.basename(osp.normpath(w)):
                    dict(ap=r[0], source=r[1], work_dir=w)
                    for w, r in others.items()
                },
                table=table.rstrip('\n')),
            sys.argv)
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
