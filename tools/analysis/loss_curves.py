"""Draws the paper's loss figures from the project's own loss component.

    python tools/analysis/loss_curves.py [--figures 1 5 6] [--out-dir DIR]
        [--format png|svg|pdf] [--gammas 0 0.5 1 2 5] [--dpi 100]

* Figure 1: CE and FL against p_t for gamma in {0, 0.5, 1, 2, 5} (Sec. 3.2).
* Figure 5: CE, FL (gamma 2) and FL* (gamma 2, beta 1; gamma 4, beta 0)
  against x_t = y x (appendix A).
* Figure 6: their derivatives w.r.t. x (appendix B).

Every value is computed by ``focal_family_loss`` (the component the heads
train with) on logits, and the derivatives by autograd through it (whose
backward pass is the component's closed-form gradient), not from re-typed
formulas: the plots document what the code computes. Alpha is off
(``alpha=None``) as in the paper's figures. A CSV of the plotted points is
written beside each figure.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

# yapf: disable
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from figure_io import (FORMATS, beside, new_figure, save_figure,  # noqa: E402
                       write_csv)

from projects.focal_retina.losses import focal_family_loss  # noqa: E402

# yapf: enable

# (label, gamma, star, beta) of the curves of Figures 5 and 6.
VARIANTS: List[Tuple[str, float, bool, float]] = [
    ('CE', 0.0, False, 0.0),
    ('FL, γ = 2', 2.0, False, 0.0),
    ('FL*, γ = 2, β = 1', 2.0, True, 1.0),
    ('FL*, γ = 4, β = 0', 4.0, True, 0.0),
]
FIGURE1_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
NAMES = {
    1: 'figure1_focal_loss',
    5: 'figure5_loss_vs_xt',
    6: 'figure6_derivatives'
}


def positive_loss(x: torch.Tensor,
                  gamma: float,
                  star: bool = False,
                  beta: float = 0.0,
                  grad: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Loss (and d loss / dx) of examples of the ground-truth class.

    Args:
        x: Logits of shape (N,), float64; with y = +1, x_t = x.
        gamma, star, beta: The loss (gamma = 0: CE, eq. 3; FL, eq. 4;
            ``star``: FL*, eq. 7-8).
        grad: Also return the derivative (autograd through the component).

    Returns:
        (loss (N,), dloss/dx (N,) or an empty array).
    """
    x = x.detach().reshape(-1, 1).clone().requires_grad_(grad)
    labels = torch.zeros(x.size(0), dtype=torch.long)  # class 0 of K = 1
    kwargs = dict(gamma=gamma, alpha=None, star=star, star_beta=beta)
    loss = focal_family_loss(x, labels, reduction='none', **kwargs)
    d = np.empty(0)
    if grad:
        # The sum's gradient w.r.t. each x_i is d loss_i / d x_i.
        focal_family_loss(x, labels, reduction='sum', **kwargs).backward()
        d = x.grad.reshape(-1).numpy()
    return loss.detach().reshape(-1).numpy(), d


def figure1_curves(pt: np.ndarray,
                   gammas: Sequence[float]) -> Dict[float, np.ndarray]:
    """FL(p_t) for each gamma; p_t in (0, 1), given as logit x = x_t."""
    p = torch.as_tensor(pt, dtype=torch.float64)
    x = torch.log(p) - torch.log1p(-p)  # p_t = sigmoid(x)
    return {g: positive_loss(x, g)[0] for g in gammas}


def variant_curves(xt: np.ndarray,
                   grad: bool) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{label: (loss, dloss/dx)} of Figures 5-6 over x_t (y = +1)."""
    x = torch.as_tensor(xt, dtype=torch.float64)
    return {
        label: positive_loss(x, g, star, b, grad=grad)
        for label, g, star, b in VARIANTS
    }


def plot_figure1(path: str, gammas: Sequence[float], dpi: int) -> None:
    pt = np.arange(1, 1000) / 1000.0  # 0.001 ... 0.999, 0.9 exactly
    curves = figure1_curves(pt, gammas)
    fig, ax = new_figure(6, 4.5, dpi)
    for g, loss in curves.items():
        name = 'CE (γ = 0)' if g == 0 else f'γ = {g:g}'
        ax.plot(pt, loss, label=name, linewidth=1.5)
    ax.axvspan(0.6, 1.0, color='0.92', zorder=0)
    ax.text(0.8, 3.0, 'well-classified\nexamples', ha='center')
    ax.set(
        xlim=(0, 1),
        ylim=(0, 5),
        xlabel='probability of ground truth class $p_t$',
        ylabel='loss',
        title='Figure 1: FL = $-(1-p_t)^\\gamma \\log(p_t)$')
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    write_csv(
        beside(path, '.csv'), ['p_t'] + [f'fl_gamma_{g:g}' for g in curves],
        zip(pt, *curves.values()))


def plot_variants(path: str, derivative: bool, dpi: int) -> None:
    xt = np.linspace(-5.0, 5.0, 1001)
    curves = variant_curves(xt, grad=derivative)
    fig, ax = new_figure(6, 4.5, dpi)
    for label, (loss, d) in curves.items():
        ax.plot(xt, d if derivative else loss, label=label, linewidth=1.5)
    if derivative:
        ax.set(
            ylim=(-1.2, 0.05),
            ylabel='dL / dx',
            title='Figure 6: derivatives w.r.t. x (y = +1, autograd)')
    else:
        ax.set(ylim=(0, 5), ylabel='loss', title='Figure 5: loss vs $x_t$')
    ax.set(xlim=(-5, 5), xlabel='$x_t$')
    ax.axvline(0, color='0.7', linewidth=0.8)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    col = 'dloss_dx' if derivative else 'loss'
    write_csv(
        beside(path, '.csv'), ['x_t'] + [f'{col} {label}' for label in curves],
        zip(xt, *[c[1] if derivative else c[0] for c in curves.values()]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--figures',
        type=int,
        nargs='+',
        default=[1, 5, 6],
        choices=sorted(NAMES),
        help='which of the paper figures to draw')
    parser.add_argument('--out-dir', default='outputs/figures')
    parser.add_argument('--format', default='png', choices=FORMATS)
    parser.add_argument(
        '--gammas',
        type=float,
        nargs='+',
        default=list(FIGURE1_GAMMAS),
        help='gamma values of Figure 1')
    parser.add_argument('--dpi', type=int, default=100)
    args = parser.parse_args()
    if any(not g >= 0 for g in args.gammas):
        parser.error(f'--gammas {args.gammas}: expected values >= 0')
    if args.dpi < 10:
        parser.error(f'--dpi {args.dpi}: expected at least 10')
    return args


def main() -> None:
    args = parse_args()
    for number in args.figures:
        path = osp.join(args.out_dir, f'{NAMES[number]}.{args.format}')
        if number == 1:
            plot_figure1(path, args.gammas, args.dpi)
        else:
            plot_variants(path, derivative=number == 6, dpi=args.dpi)


if __name__ == '__main__':
    main()
