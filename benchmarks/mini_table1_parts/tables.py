"""The tables (Markdown strings stored in the results file, embedded in
docs/benchmarks.md and the README by ``results_io embed``) and the loss-curve
figure of mini Table 1."""
import os.path as osp
import sys
from typing import Dict, List, Optional

from benchmarks.results_io import markdown_table
from .claims import gamma_methods
from .methods import CURVE_METHODS, METHODS, paper_cell, paper_rows
from .regimes import ROOT

CURVE_POINTS = (1, 2, 3, 5, 10, 20, 50, 100)  # iterations in the table
SHORT = {
    'fl_beats_alpha_ce': 'FL > alpha-CE',
    'fl_beats_ohem': 'FL > OHEM',
    'flstar_matches_fl': 'FL* ~ FL',
    'gamma_robust': 'robust in gamma',
    'gamma_best_near_2': 'best gamma near 2',
    'noprior_diverges_sgd': 'no prior diverges (SGD)',
    'noprior_diverges_sgd_nogn': 'no prior diverges (SGD, no GN)',
    'noprior_diverges_default': 'no prior diverges (AdamW)',
    'prior_beats_noprior': 'prior > no prior',
    'dr_beats_fl': 'DR > FL',
    'alpha_ce_075_beats_025': 'alpha .75 > .25',
}


def fmt(value: Optional[float], digits: int = 1) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def methods_table(summary: Dict, points: List[int]) -> str:
    """AP (mean, each seed, range) of every method, its AP at each
    validation point (mean over seeds) and its paper cell."""
    papers = paper_rows()
    rows = []
    for name, s in summary.items():
        seeds = ' '.join(f'{v:.1f}' for v in s['AP_per_seed']) or 'n/a'
        rng = 'n/a' if s['spread'] is None else \
            f'{s["min"]:.1f}-{s["max"]:.1f}'
        by_iter = ' / '.join(fmt(s['AP_by_iter'].get(str(p))) for p in points)
        rows.append([
            name, METHODS[name].description,
            fmt(s['AP']),
            fmt(s['AP50']),
            fmt(s['AP75']), seeds, rng, by_iter, ', '.join(s['status']),
            paper_cell(papers[name])
        ])
    header = [
        'method', 'setting', 'AP', 'AP50', 'AP75', 'AP per seed',
        'range (min-max)', 'AP at ' + ' / '.join(str(p) for p in points),
        'status', 'paper COCO AP'
    ]
    return markdown_table(header, rows)


def claims_table(claims: List[Dict]) -> str:
    return markdown_table(['paper\'s claim', 'paper', 'verdict', 'measured'],
                          [[c['claim'], c['paper'], c['verdict'], c['detail']]
                           for c in claims])


def gamma_table(summary: Dict) -> str:
    """The gamma sweep of Table 1b (each gamma with the paper's alpha)."""
    papers = paper_rows()
    rows = []
    for gamma, name in gamma_methods(summary):
        s = summary[name]
        rng = 'n/a' if s['spread'] is None else \
            f'{s["min"]:.1f}-{s["max"]:.1f}'
        rows.append([
            f'{gamma:g}', f'{METHODS[name].alpha:g}', name,
            fmt(s['AP']), rng, papers[name]['paper_ap']
        ])
    return markdown_table(
        ['gamma', 'alpha', 'method', 'AP', 'range', 'paper AP (Table 1b)'],
        rows)


def curves_table(curves: Dict, iters: int) -> str:
    """The total loss of the divergence check's runs at the first
    iterations, each seed ('NaN' after a non-finite loss stopped it)."""
    points = [p for p in CURVE_POINTS if p <= iters]
    rows = []
    for optimizer, by_method in curves.items():
        for name in CURVE_METHODS:
            for r in by_method.get(name, []):
                loss = r['curves']['loss']
                cells = [
                    fmt(loss[p - 1], 3)
                    if p <= len(loss) and loss[p - 1] is not None else 'NaN'
                    for p in points
                ]
                rows.append([optimizer, name, r['seed']] + cells +
                            [r['status']])
    return markdown_table(['optimizer / towers', 'method', 'seed'] +
                          [f'loss at {p}' for p in points] + ['status'], rows)


def readme_line(claims: List[Dict], imbalance: Dict, regime: Dict, seeds: int,
                timing: Dict) -> str:
    """The README's sentence: the imbalance, the budget and each claim's
    verdict."""
    verdicts = '; '.join(f'{SHORT.get(c["key"], c["key"])}: {c["verdict"]}'
                         for c in claims)
    span = timing['span_min'] or 0.0
    missing = f', {timing["missing"]} runs not finished' \
        if timing['missing'] else ''
    return (f'at {imbalance["neg_per_pos"]:,.0f} negatives per positive '
            f'anchor ({regime["img_size"]} px shapes, one '
            f'{regime["min_size"]}-{regime["max_size"]} px object each; '
            f'{seeds} seeds x {regime["iters"]} iterations per method, '
            f'{span:.0f} min{missing}): {verdicts}.')


def figure(curves: Dict, summary: Dict, path: str,
           iters: int) -> Optional[str]:
    """Draws the total loss of ce_noprior and ce_a05 over the first
    ``iters`` iterations (one panel per optimizer / towers, every seed) and
    the gamma sweep (each seed's AP and the mean against gamma, the
    paper's AP on a second axis); writes the PNG and a CSV of its points.
    None with neither."""
    panels = [o for o in curves if curves[o]]
    sweep = gamma_methods(summary)
    if not panels and not sweep:
        return None
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
    from figure_io import beside, new_figure, save_figure, write_csv
    ncols = len(panels) + bool(sweep)
    fig, axes = new_figure(4.4 * ncols, 3.6, 80, ncols=ncols)
    axes = [axes] if ncols == 1 else list(axes)
    rows = []
    for ax, label in zip(axes, panels):
        for name in CURVE_METHODS:
            for r in curves[label].get(name, []):
                loss = r['curves']['loss'][:iters]
                its = [i + 1 for i, v in enumerate(loss) if v is not None]
                vals = [v for v in loss if v is not None]
                run = f'{name} seed {r["seed"]}'
                ax.plot(
                    its,
                    vals,
                    label=run,
                    linestyle='-' if name == 'ce_noprior' else '--')
                rows += [(label, run, 'loss', i, v) for i, v in zip(its, vals)]
        ax.set(
            yscale='log',
            xlabel='iteration',
            ylabel='loss (cls + box)',
            title=f'{label}: first {iters} iterations')
        ax.legend(fontsize=6)
    if sweep:
        ax = axes[-1]
        papers = paper_rows()
        gammas = [g for g, _ in sweep]
        for g, name in sweep:
            aps = summary[name]['AP_per_seed']
            ax.plot([g] * len(aps), aps, 'o', color='tab:blue', alpha=0.5)
            rows += [('gamma', name, 'AP', g, v) for v in aps]
        ax.plot(
            gammas, [summary[n]['AP'] for _, n in sweep],
            '-',
            color='tab:blue',
            label='ours (mean, seeds)')
        ax.set(xlabel='gamma', ylabel='AP (ours)', title='gamma sweep')
        paper = ax.twinx()
        paper.plot(
            gammas, [float(papers[n]['paper_ap']) for _, n in sweep],
            's--',
            color='tab:gray',
            label='paper (COCO)')
        paper.set_ylabel('AP (paper, COCO)')
        ax.legend(fontsize=6, loc='lower center')
        paper.legend(fontsize=6, loc='lower right')
    fig.tight_layout()
    save_figure(fig, path)
    write_csv(beside(path, '.csv'), ['panel', 'run', 'value', 'x', 'y'], rows)
    return path
