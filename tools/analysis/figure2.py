"""Figure 2 of the paper: COCO AP against inference time, with the paper's
points (Table 1e's RetinaNet-50/101 at 400-800 px and the other detectors
of the figure's legend, test-dev AP, ms on an Nvidia M40) and ours."""
import os.path as osp
from typing import Dict, List

from figure_io import new_figure, save_figure

# Table 1e: (depth, scale) -> (test-dev AP, ms on an Nvidia M40).
PAPER_TABLE_1E = {
    (50, 400): (30.5, 64),
    (50, 500): (32.5, 72),
    (50, 600): (34.3, 98),
    (50, 700): (35.1, 121),
    (50, 800): (35.7, 153),
    (101, 400): (31.9, 81),
    (101, 500): (34.4, 90),
    (101, 600): (36.0, 122),
    (101, 700): (37.1, 154),
    (101, 800): (37.8, 198)
}
# Figure 2's legend: the other detectors (AP on test-dev, ms).
PAPER_OTHERS = {
    'YOLOv2': (21.6, 25),
    'SSD321': (28.0, 61),
    'DSSD321': (28.0, 85),
    'R-FCN': (29.9, 85),
    'SSD513': (31.2, 125),
    'DSSD513': (33.2, 156),
    'FPN FRCN': (36.2, 172)
}
# Label offsets (points) keeping the legend's close neighbours apart.
_OFFSETS = {'SSD321': (-42, -3), 'R-FCN': (-34, 2), 'FPN FRCN': (4, 2)}


def plot_figure2(rows: List[dict], results: Dict[str, float], path: str,
                 dpi: int, device: str) -> None:
    """The paper's points and ours (rows of benchmark_speed.py whose key,
    ``CONFIG`` or ``CONFIG@SCALE``, has an AP in ``results``)."""
    fig, ax = new_figure(7, 5, dpi)
    for depth, marker, color in ((50, 'o', 'tab:blue'), (101, 'D',
                                                         'tab:orange')):
        pts = sorted(v for (d, _), v in PAPER_TABLE_1E.items() if d == depth)
        ax.plot([p[1] for p in pts], [p[0] for p in pts],
                marker=marker,
                color=color,
                label=f'RetinaNet-{depth} (paper, M40)')
    for name, (ap, ms) in PAPER_OTHERS.items():
        ax.plot(ms, ap, 'k^', markersize=5)
        ax.annotate(
            name, (ms, ap),
            textcoords='offset points',
            xytext=_OFFSETS.get(name, (4, -10)),
            fontsize=7)
    ours = sorted((r['ms_median'], results[r['key']], r['key']) for r in rows
                  if r['key'] in results)
    if ours:
        ax.plot([o[0] for o in ours], [o[1] for o in ours],
                's-',
                color='tab:green',
                label=f'ours ({device}; AP on its own data)')
        for ms, ap, key in ours:
            config, _, scale = key.partition('@')
            name = f'{scale} px' if scale else \
                osp.splitext(osp.basename(config))[0]
            ax.annotate(
                name, (ms, ap),
                fontsize=7,
                textcoords='offset points',
                xytext=(4, 4))
    else:
        print('note: no --results entry matches the benchmarked configs')
    times = [v[1] for v in PAPER_TABLE_1E.values()] + [o[0] for o in ours]
    if max(times) > 10 * 198:
        ax.set_xscale('log')  # CPU times next to the paper's GPU ones
    ax.set(
        xlabel='inference time (ms)',
        ylabel='AP',
        title='Figure 2: speed vs accuracy')
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize='small')
    fig.tight_layout()
    save_figure(fig, path)
