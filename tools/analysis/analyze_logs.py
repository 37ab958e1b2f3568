"""Training curves of one or more work dirs, overlaid (e.g. FL vs CE).

    python tools/analysis/analyze_logs.py WORK_DIR [WORK_DIR ...]
        [--keys loss_cls loss_bbox lr bbox_mAP] [--legend FL CE]
        [--out curves.png] [--smooth 1] [--log-y loss_cls]

One panel per key, every run overlaid, against the training iteration.
A key matches a logged name exactly or as its last ``/`` part
(``bbox_mAP`` -> ``coco/bbox_mAP``). A work dir contributes all its runs
(a resumed run continues the curve); a single ``scalars.json`` also works.

Departs from mmdet's ``tools/analysis_tools/analyze_logs.py plot_curve``
(not installed with the package, and it needs seaborn): mmdet keys its
logs by epoch and plots validation metrics against the epoch, so on our
iteration-based schedules (Sec. 4.1: 90k iterations) every validation lands
at "epoch 1". Here every series is keyed by iteration (see logs.py for how
a validation's iteration is found), several keys get their own panels in
one figure, and the mean time per iteration is printed as mmdet's
``cal_train_time`` does.
"""
import argparse
import math
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np

# yapf: disable
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from figure_io import (beside, check_figure_path, fail, plt,  # noqa: E402
                       save_figure, write_csv)
from logs import Series, load_series  # noqa: E402

from benchmarks import results_io  # noqa: E402

# yapf: enable

DEFAULT_KEYS = ('loss_cls', 'loss_bbox', 'lr', 'bbox_mAP', 'bbox_mAP_50')


def resolve_key(series: Series, key: str) -> Optional[str]:
    """The logged name ``key`` refers to in ``series``, or None."""
    if key in series:
        return key
    matches = sorted(k for k in series if k.split('/')[-1] == key)
    return matches[0] if matches else None


def smooth(ys: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (1: unchanged)."""
    if window <= 1 or len(ys) < 2:
        return ys
    c = np.cumsum(np.insert(ys, 0, 0.0))
    n = np.minimum(np.arange(1, len(ys) + 1), window)
    return (c[1:] - c[np.arange(1, len(ys) + 1) - n]) / n


def time_summary(name: str, series: Series) -> Optional[float]:
    """Mean seconds per training iteration (first logged value excluded,
    as mmdet's cal_train_time does without --include-outliers); printed
    and returned (None with fewer than two logged values)."""
    train = [v for _, v in sorted(series.get('time', {}).items())]
    if len(train) > 1:
        print(f'{name}: {np.mean(train[1:]):.4f} s/iter over '
              f'{len(train) - 1} logged iterations')
        return float(np.mean(train[1:]))
    return None


def plot(runs: Dict[str, Series], keys: List[str], path: str, dpi: int,
         window: int, log_y: List[str], title: Optional[str]) -> list:
    """Draws one panel per key; returns the CSV rows (run, key, iter,
    value)."""
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = plt.figure(figsize=(4.2 * ncols, 3.3 * nrows), dpi=dpi)
    rows = []
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for name, series in runs.items():
            real = resolve_key(series, key)
            if real is None:
                continue
            its = np.array(sorted(series[real]))
            ys = np.array([series[real][it] for it in its])
            is_metric = '/' in real
            shown = ys if is_metric else smooth(ys, window)
            ax.plot(
                its,
                shown,
                label=name,
                linewidth=1.2,
                marker='o' if is_metric else None,
                markersize=3)
            rows += [[name, real, int(a), f'{b:.8g}'] for a, b in zip(its, ys)]
        ax.set(xlabel='iteration', title=key)
        if key in log_y:
            ax.set_yscale('log')
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', help='work dirs or scalars.json')
    parser.add_argument(
        '--keys',
        nargs='+',
        help='default: those of '
        f'{list(DEFAULT_KEYS)} that were logged')
    parser.add_argument('--legend', nargs='+', help='one name per run')
    parser.add_argument('--out', default='outputs/figures/curves.png')
    parser.add_argument('--title')
    parser.add_argument(
        '--smooth',
        type=int,
        default=1,
        help='moving-average window for training scalars')
    parser.add_argument(
        '--log-y', nargs='*', default=[], help='keys drawn on a log scale')
    parser.add_argument('--dpi', type=int, default=100)
    results_io.add_argument(parser)
    args = parser.parse_args()
    if args.legend and len(args.legend) != len(args.runs):
        parser.error(f'--legend has {len(args.legend)} names for '
                     f'{len(args.runs)} runs')
    if args.smooth < 1:
        parser.error('--smooth must be >= 1')
    return args


def main() -> None:
    args = parse_args()
    check_figure_path(args.out)
    names = args.legend or [osp.basename(osp.normpath(r)) for r in args.runs]
    if len(set(names)) < len(names):  # same folder names: use full paths
        names = list(args.runs)
    runs, seconds = {}, {}
    for name, path in zip(names, args.runs):
        if not osp.exists(path):
            fail(f'{path!r} does not exist')
        series = load_series(path)
        if not series:
            fail(f'no mmengine scalars found in {path!r} (expected '
                 '<work_dir>/<timestamp>/vis_data/scalars.json)')
        runs[name] = series
        seconds[name] = time_summary(name, series)
    keys = args.keys or [
        k
        for k in DEFAULT_KEYS if any(resolve_key(s, k) for s in runs.values())
    ]
    missing = [
        k for k in keys if not any(resolve_key(s, k) for s in runs.values())
    ]
    if missing:
        logged = sorted({k for s in runs.values() for k in s})
        fail(f'--keys {missing} not logged; logged keys: {logged}')
    rows = plot(runs, keys, args.out, args.dpi, args.smooth, args.log_y,
                args.title)
    write_csv(beside(args.out, '.csv'), ['run', 'key', 'iter', 'value'], rows)
    if args.results:
        # keyed by the work dir's name: legends hold dots and commas
        record = {}
        for (name, series), path in zip(runs.items(), args.runs):
            real = {k: resolve_key(series, k) for k in keys}
            record[osp.basename(osp.normpath(path))] = dict(
                legend=name,
                seconds_per_iter=seconds[name],
                series={
                    r: {
                        str(it): v
                        for it, v in sorted(series[r].items())
                    }
                    for r in real.values() if r is not None
                })
        path = results_io.write_results(args.results,
                                        dict(keys=keys, runs=record), sys.argv)
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
