"""The paper's claims, judged on the per-seed APs.

Verdicts: ``holds``, ``fails``, ``undecided`` (the seed spreads overlap) or
``not measured``. "A > B" holds when every seed of A is above every seed of
B (the ranges min-max over seeds do not overlap), fails when every seed of
A is below every seed of B, and is undecided otherwise. "A ~ B" holds when
the ranges overlap and the means are within :data:`CLOSE_TOL` AP, fails
when the ranges do not overlap, and is undecided otherwise; a method with
fewer than two seeds leaves every comparison undecided. A run whose
loss went non-finite counts as AP 0 (the paper's "fails").

A new claim is one entry of :data:`CLAIMS`: a function of the summaries
(and the divergence curves) returning ``(verdict, detail)``.
"""
import math
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .methods import METHODS

VERDICTS = ('holds', 'fails', 'undecided', 'not measured')
CLOSE_TOL = 1.0  # AP points: "~" (the paper's FL* vs FL: 0.2)
ROBUST_FRACTION = 0.9  # gamma in [.5, 5] within 10 % of the best gamma
DIVERGE_FACTOR = 10.0  # a loss 10x its first value counts as diverging
GAMMA_RANGE = (0.5, 5.0)
NEAR_2 = (1.0, 2.0)  # "best near 2": the best gamma is 1 or 2


def summarise(runs: List[Dict]) -> Dict:
    """Means over seeds (AP in percent), each seed's AP, the range and the
    mean AP at each validation point of the validated runs of a method."""
    done = [r for r in runs if r.get('metrics') is not None]
    aps = [100 * r['metrics']['AP'] for r in done]
    out = dict(
        seeds=[r['seed'] for r in done],
        status=sorted({r['status']
                       for r in runs}) or ['not run'],
        AP_per_seed=aps)
    for key in ('AP', 'AP50', 'AP75'):
        values = [100 * r['metrics'][key] for r in done]
        out[key] = statistics.mean(values) if values else None
    out['min'] = min(aps) if aps else None
    out['max'] = max(aps) if aps else None
    out['spread'] = out['max'] - out['min'] if len(aps) >= 2 else None
    by_iter: Dict[int, List[float]] = {}
    for r in done:
        for e in r.get('evals', []):
            by_iter.setdefault(e['iter'], []).append(100 * e['AP'])
    out['AP_by_iter'] = {
        str(it): statistics.mean(v)
        for it, v in sorted(by_iter.items())
    }
    return out


def _range(s: Dict) -> str:
    if s['spread'] is None:
        return f'{s["AP"]:.1f}'
    return f'{s["AP"]:.1f} [{s["min"]:.1f}-{s["max"]:.1f}]'


def _have(summary: Dict, *names: str) -> bool:
    return all(summary.get(n, {}).get('AP') is not None for n in names)


def _one_seed(a: Dict, b: Dict) -> bool:
    """Either side has fewer than two seeds: no spread to judge by."""
    return len(a['AP_per_seed']) < 2 or len(b['AP_per_seed']) < 2


def greater(a: Dict, b: Dict) -> str:
    """'A > B' on two summaries (see the module's docstring); undecided
    with fewer than two seeds on a side."""
    if _one_seed(a, b):
        return 'undecided'
    if a['min'] > b['max']:
        return 'holds'
    if a['max'] < b['min']:
        return 'fails'
    return 'undecided'


def close(a: Dict, b: Dict, tol: float = CLOSE_TOL) -> str:
    """'A ~ B' on two summaries (see the module's docstring); undecided
    with fewer than two seeds on a side."""
    if _one_seed(a, b):
        return 'undecided'
    if a['min'] > b['max'] or a['max'] < b['min']:
        return 'fails'
    return 'holds' if abs(a['AP'] - b['AP']) <= tol else 'undecided'


def best_of(summary: Dict, names: Sequence[str]) -> Optional[str]:
    """The measured method of ``names`` with the highest mean AP."""
    have = [n for n in names if _have(summary, n)]
    return max(have, key=lambda n: summary[n]['AP']) if have else None


def _pair(summary: Dict, a: str, others: Sequence[str],
          judge: Callable[[Dict, Dict], str]) -> Tuple[str, str]:
    """``judge(a, best of others)``."""
    best = best_of(summary, others)
    if not _have(summary, a) or best is None:
        return 'not measured', f'needs {a} and one of {", ".join(others)}'
    verdict = judge(summary[a], summary[best])
    return verdict, (f'{a} {_range(summary[a])} vs {best} '
                     f'{_range(summary[best])}')


def gamma_methods(summary: Dict) -> List[Tuple[float, str]]:
    """(gamma, method) of the measured gamma sweep, by gamma."""
    return sorted((m.gamma, n) for n, m in METHODS.items()
                  if m.gamma is not None and _have(summary, n))


def gamma_robust(summary: Dict, _curves: Dict) -> Tuple[str, str]:
    """Every gamma in [.5, 5] within 10 % of the best gamma's mean AP;
    judged on the worst one's seeds against that threshold."""
    sweep = [(g, n) for g, n in gamma_methods(summary)
             if GAMMA_RANGE[0] <= g <= GAMMA_RANGE[1]]
    if len(sweep) < 2:
        return 'not measured', 'needs two gammas in [0.5, 5]'
    best = max(sweep, key=lambda gn: summary[gn[1]]['AP'])[1]
    worst = min(sweep, key=lambda gn: summary[gn[1]]['AP'])[1]
    bar = ROBUST_FRACTION * summary[best]['AP']
    w = summary[worst]
    verdict = 'holds' if w['min'] >= bar else \
        'fails' if w['max'] < bar else 'undecided'
    if len(w['AP_per_seed']) < 2 or len(summary[best]['AP_per_seed']) < 2:
        verdict = 'undecided'
    return verdict, (f'worst {worst} {_range(w)} vs 90 % of best {best} '
                     f'{summary[best]["AP"]:.1f}: {bar:.1f}')


def gamma_near_2(summary: Dict, _curves: Dict) -> Tuple[str, str]:
    """The best gamma is 1 or 2: fails when a gamma outside {1, 2} beats
    the better of them on every seed, holds when the best mean is at
    gamma 1 or 2 and no other gamma ties it within the spreads."""
    sweep = gamma_methods(summary)
    near = [n for g, n in sweep if g in NEAR_2]
    far = [n for g, n in sweep if g not in NEAR_2]
    if not near or not far:
        return 'not measured', 'needs gamma 1 or 2 and another gamma'
    top_near = best_of(summary, near)
    top_far = best_of(summary, far)
    verdict = greater(summary[top_near], summary[top_far])
    gammas = ', '.join(f'{g:g}: {summary[n]["AP"]:.1f}' for g, n in sweep)
    return verdict, (f'best of gamma 1, 2 {top_near} '
                     f'{_range(summary[top_near])} vs best other {top_far} '
                     f'{_range(summary[top_far])} (gamma: AP {gammas})')


def diverged(run: Dict, factor: float = DIVERGE_FACTOR) -> bool:
    """A run diverged: its loss went non-finite, or rose above ``factor``
    times its first value."""
    if run['status'] == 'diverged':
        return True
    loss = [v for v in run['curves']['loss'] if v is not None]
    return bool(loss) and max(loss) > factor * loss[0]


def divergence(noprior: List[Dict], prior: List[Dict]) -> Tuple[str, str]:
    """'CE diverges without the prior and not with it': holds when every
    seed of ``noprior`` diverged and none of ``prior`` did; fails when no
    seed of ``noprior`` diverged, or every seed of both did (then the
    divergence is not the prior's doing); undecided otherwise."""
    if not noprior:
        return 'not measured', 'needs ce_noprior runs'
    n = sum(diverged(r) for r in noprior)
    c = sum(diverged(r) for r in prior)
    if n == 0 or (n == len(noprior) and prior and c == len(prior)):
        verdict = 'fails'
    elif n == len(noprior) and c == 0:
        verdict = 'holds'
    else:
        verdict = 'undecided'
    parts = []
    for r in noprior:
        loss = [v for v in r['curves']['loss'] if v is not None]
        if r['status'] == 'diverged':
            parts.append(f'seed {r["seed"]}: {r["message"]}')
        else:
            parts.append(f'seed {r["seed"]}: loss {loss[0]:.3g} at it. 1, '
                         f'max {max(loss):.3g}, {loss[-1]:.3g} at it. '
                         f'{len(loss)}')
    return verdict, (f'no prior: {n}/{len(noprior)} seeds diverged (' +
                     '; '.join(parts) + f'); with the prior (ce_a05): '
                     f'{c}/{len(prior)}')


def _diverges_with(label: str):

    def judge(_summary: Dict, curves: Dict) -> Tuple[str, str]:
        runs = curves.get(label, {})
        return divergence(runs.get('ce_noprior', []), runs.get('ce_a05', []))

    return judge


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str
    judge: Callable[[Dict, Dict], Tuple[str, str]]


def _greater(a: str, others: Sequence[str]):
    return lambda s, _c: _pair(s, a, others, greater)


CLAIMS: List[Claim] = [
    Claim('fl_beats_alpha_ce', 'FL (gamma 2, alpha .25) > best alpha-CE',
          '34.0 vs 31.1 (alpha .75), Table 1a/1b',
          _greater('fl_g2', ['ce_a025', 'ce_a05', 'ce_a075'])),
    Claim('fl_beats_ohem', 'FL > best OHEM (OHEM, OHEM 1:3)',
          '36.0 vs 32.8 / 31.1 (R-101), Table 1d',
          _greater('fl_g2', ['ohem', 'ohem13'])),
    Claim('flstar_matches_fl', 'FL* ~ FL (means within 1 AP)',
          '33.8 vs 34.0, Table 3',
          lambda s, _c: _pair(s, 'flstar', ['fl_g2'], close)),
    Claim('gamma_robust', 'FL robust in gamma [0.5, 5] (each within 10 % '
          'of the best)', '32.2-34.0 (worst 95 % of best), Table 1b',
          gamma_robust),
    Claim('gamma_best_near_2', 'best gamma near 2 (gamma 1 or 2 best)',
          'best 2 (34.0), 1: 33.7, Table 1b', gamma_near_2),
    Claim('alpha_ce_075_beats_025', 'alpha-CE: alpha .75 > alpha .25',
          '31.1 vs 10.8, Table 1a', _greater('ce_a075', ['ce_a025'])),
    Claim(
        'noprior_diverges_sgd', 'CE diverges without the prior, not with '
        'it (SGD at the paper\'s lr, GN towers)', 'diverges quickly '
        'without; 30.2 with, Sec. 5.1', _diverges_with('sgd')),
    Claim('noprior_diverges_sgd_nogn', 'the same, SGD on the paper\'s '
          'towers (no GroupNorm)', 'diverges quickly without; 30.2 with, '
          'Sec. 5.1', _diverges_with('sgd_nogn')),
    Claim('noprior_diverges_default', 'the same, default optimizer (AdamW, '
          'GN towers)', 'Sec. 5.1 (SGD)', _diverges_with('adamw')),
    Claim('prior_beats_noprior', 'CE with the prior > without (alpha .5)',
          '30.2 vs diverged, Sec. 5.1', _greater('ce_a05', ['ce_noprior'])),
    Claim('dr_beats_fl', 'DR loss > FL', '37.4 vs 35.7 (R-50 1x, 800 px), '
          'DR loss paper', _greater('dr', ['fl_g2'])),
]


def judge_all(summary: Dict, curves: Dict) -> List[Dict]:
    """Each claim of :data:`CLAIMS` with its verdict and detail.

    Args:
        summary: {method: :func:`summarise` of its validated runs}.
        curves: {optimizer: {method: [run records]}} of the runs whose
            first iterations judge the divergence claims.
    """
    out = []
    for c in CLAIMS:
        verdict, detail = c.judge(summary, curves)
        assert verdict in VERDICTS, verdict
        out.append(
            dict(
                key=c.key,
                claim=c.text,
                paper=c.paper,
                verdict=verdict,
                detail=detail))
    return out


def finite_mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.mean(vals) if vals else None
