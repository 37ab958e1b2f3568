"""Figure 4: the distribution of a trained model's classification loss.

    python tools/analysis/loss_cdf.py CONFIG CHECKPOINT [--split val]
        [--gammas 0 0.5 1 2] [--unit anchor|element] [--num-images N]
        [--out loss_cdf.png] [--device cpu] [--cfg-options ...]

As in Sec. 5.1 ("Analysis of the Focal Loss"): the model runs over a
dataset split; its anchors are assigned to the ground truth as in training
(the head's own ``get_targets``, i.e. its assigner, called from outside the
head on the model's outputs; ignored anchors, weight 0, are left out); the
classification loss of every positive and every negative is recomputed
with FL for each gamma (``focal_family_loss``, alpha off: it is a constant
per set and cancels in the normalisation); each set is normalised to sum 1,
sorted from lowest to highest, and its cumulative distribution drawn,
positives and negatives side by side. The CDF points go to a CSV beside
the figure (set, gamma, fraction of samples, cumulative normalised loss).

``--unit anchor`` (default): the loss of an anchor is the sum of its K
per-class terms (what it adds to the training loss). ``--unit element``:
the K binary (anchor, class) terms are the samples; the positives are the
(positive anchor, its class) terms, every other non-ignored term is a
negative, as the sigmoid classifier sees them.

Memory stays bounded for ~1e7 negatives and more: losses are streamed
into a log-spaced histogram per (set, gamma) (streaming_cdf.py): the CDF
points at the bin edges are exact, and between them the drawn line is
within (r - 1) / 4 of one bin's loss share of the exact sorted CDF, r =
10^(1 / --bins-per-decade) (0.6 % of a bin's share at the default 100).
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.utils import ProgressBar

# yapf: disable
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from figure_io import (beside, check_figure_path, new_figure,  # noqa: E402
                       save_figure, write_csv)
from streaming_cdf import StreamingCDF  # noqa: E402

from benchmarks import results_io  # noqa: E402
from projects.focal_retina.engine.cli import fail, load_config  # noqa: E402
from projects.focal_retina.losses import focal_family_loss  # noqa: E402

# yapf: enable

SETS = ('positive', 'negative')


def anchor_targets(model, data: dict) -> Tuple[torch.Tensor, ...]:
    """Classification logits and training targets of every anchor.

    Args:
        model: A dense detector (mmdet ``AnchorHead`` family) with a
            ``train_cfg`` (its assigner), in eval mode.
        data: A batch after ``model.data_preprocessor``.

    Returns:
        (logits (N*M, K), labels (N*M,) in [0, K], K = background,
        weights (N*M,) with 0 for ignored and invalid anchors), image-major
        rows, M anchors per image, levels in mmdet's (H, W, A) order.
    """
    from mmdet.models.utils import unpack_gt_instances
    head = model.bbox_head
    cls_scores, _ = head(model.extract_feat(data['inputs']))
    gts, gts_ignore, metas = unpack_gt_instances(data['data_samples'])
    sizes = [c.shape[-2:] for c in cls_scores]
    anchors, valid = head.get_anchors(
        sizes, metas, device=cls_scores[0].device)
    labels, weights = head.get_targets(
        anchors, valid, gts, metas, batch_gt_instances_ignore=gts_ignore)[:2]
    k = head.cls_out_channels
    n = cls_scores[0].size(0)
    logits = torch.cat(
        [c.permute(0, 2, 3, 1).reshape(n, -1, k) for c in cls_scores], 1)
    return (logits.reshape(-1, k), torch.cat(labels, 1).reshape(-1),
            torch.cat(weights, 1).reshape(-1))


def split_losses(logits: torch.Tensor,
                 labels: torch.Tensor,
                 weights: torch.Tensor,
                 gamma: float,
                 alpha,
                 unit: str,
                 star: bool = False,
                 beta: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample FL of the positives and of the negatives (float64).

    Args:
        logits, labels, weights: As returned by :func:`anchor_targets`.
        gamma, alpha, star, beta: The loss recomputed (alpha None: off).
        unit: 'anchor' (sum over the K classes) or 'element'.

    Returns:
        (positive losses, negative losses), 1-D.
    """
    k = logits.size(1)
    loss = focal_family_loss(
        logits.detach().double(),
        labels,
        gamma=gamma,
        alpha=alpha,
        star=star,
        star_beta=beta,
        reduction='none')  # (N*M, K)
    keep = weights > 0
    pos = keep & (labels < k)
    if unit == 'anchor':
        per_anchor = loss.sum(1)
        return per_anchor[pos], per_anchor[keep & (labels == k)]
    pos_rows = pos.nonzero().squeeze(1)
    pos_vals = loss[pos_rows, labels[pos_rows]]
    neg_mask = keep.unsqueeze(1).expand_as(loss).clone()
    neg_mask[pos_rows, labels[pos_rows]] = False
    return pos_vals, loss[neg_mask]


def collect(model, dataloader, gammas: Sequence[float], alpha, unit: str,
            num_images: int,
            bins_per_decade: int) -> Dict[Tuple[str, float], StreamingCDF]:
    """Streams the losses of ``num_images`` images into the histograms."""
    cdfs = {
        (s, g): StreamingCDF(bins_per_decade=bins_per_decade)
        for s in SETS
        for g in gammas
    }
    total = min(num_images, len(dataloader.dataset))
    progress = ProgressBar(total)
    seen = 0
    with torch.no_grad():
        for batch in dataloader:
            batch = {k: v[:total - seen] for k, v in batch.items()}
            data = model.data_preprocessor(batch, False)
            logits, labels, weights = anchor_targets(model, data)
            for g in gammas:
                pos, neg = split_losses(logits, labels, weights, g, alpha,
                                        unit)
                cdfs[('positive', g)].update(pos)
                cdfs[('negative', g)].update(neg)
            seen += len(data['data_samples'])
            for _ in data['data_samples']:
                progress.update()
            if seen >= total:
                break
    print()
    return cdfs


def plot(cdfs: Dict[Tuple[str, float], StreamingCDF], gammas: Sequence[float],
         path: str, dpi: int) -> List[list]:
    """Draws the two panels; returns the CSV rows of the points."""
    fig, axes = new_figure(10, 4.2, dpi, ncols=2)
    rows = []
    for ax, name in zip(axes, SETS):
        for g in gammas:
            x, y = cdfs[(name, g)].curve()
            ax.plot(x, y, label=f'γ = {g:g}', linewidth=1.5)
            rows += [[name, f'{g:g}', f'{a:.10g}', f'{b:.10g}']
                     for a, b in zip(x, y)]
        n = cdfs[(name, gammas[0])].num_samples
        kind = 'foreground' if name == 'positive' else 'background'
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel=f'fraction of {kind} examples',
            ylabel='cumulative normalized loss',
            title=f'{name} samples ({n:,})')
        ax.legend(loc='upper left')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    return rows


def summarize(cdfs, gammas: Sequence[float]) -> Tuple[str, dict]:
    """Prints the numbers the paper quotes from Figure 4.

    Returns:
        The printed text and ``{'<set> gamma=<g>': {n, top20, half}}``
        (fractions) for the results file.
    """
    lines, figures = [], {}
    for name in SETS:
        for g in gammas:
            cdf = cdfs[(name, g)]
            x, y = cdf.curve()
            top20 = 1 - float(np.interp(0.8, x, y))
            half = 1 - float(np.interp(0.5, y, x))
            figures[f'{name} gamma={g:g}'] = dict(
                n=cdf.num_samples, top20=top20, half=half)
            lines.append(f'{name:8s} gamma={g:<4g} n={cdf.num_samples:>11,}  '
                         f'hardest 20% hold {100 * top20:5.1f}% of the loss; '
                         f'half the loss is in the hardest {100 * half:.2f}%')
            if cdf.num_above_range:
                lines.append(f'  note: {cdf.num_above_range} losses above the'
                             ' histogram range (their bin is not '
                             'interpolated)')
    print('\n'.join(lines))
    return '\n'.join(lines), figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--split', default='val', choices=('train', 'val', 'test'))
    parser.add_argument(
        '--gammas', type=float, nargs='+', default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument(
        '--alpha',
        type=float,
        default=None,
        help='alpha_t (default off; it cancels within a set for --unit '
        'element)')
    parser.add_argument(
        '--unit', default='anchor', choices=('anchor', 'element'))
    parser.add_argument(
        '--num-images',
        type=int,
        default=500,
        help='images to run (the first N of the split, or random with '
        '--shuffle)')
    parser.add_argument('--shuffle', action='store_true')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--bins-per-decade', type=int, default=100)
    parser.add_argument('--out', default='outputs/figures/loss_cdf.png')
    parser.add_argument('--dpi', type=int, default=100)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    results_io.add_argument(parser)
    args = parser.parse_args()
    if any(not g >= 0 for g in args.gammas):
        parser.error(f'--gammas {args.gammas}: expected values >= 0')
    if args.alpha is not None and not 0 <= args.alpha <= 1:
        parser.error(f'--alpha {args.alpha}: expected a value in [0, 1]')
    for key in ('num_images', 'batch_size', 'bins_per_decade'):
        if getattr(args, key) < 1:
            parser.error(f'--{key.replace("_", "-")} must be >= 1')
    return args


def build(args):
    """The model (eval mode, with its train_cfg) and the split's loader."""
    from mmdet.apis import init_detector
    from mmengine.runner import Runner
    cfg = load_config(args.config, args.cfg_options)
    if not osp.isfile(args.checkpoint):
        fail(f'checkpoint {args.checkpoint!r} does not exist')
    if cfg.model.get('train_cfg') is None:
        fail('model.train_cfg is missing: the assigner is needed to tell '
             'positive, negative and ignored anchors apart')
    model = init_detector(cfg, args.checkpoint, device=args.device).eval()
    if not hasattr(model.bbox_head, 'get_targets'):
        fail(f'{type(model.bbox_head).__name__} has no get_targets: '
             'expected an anchor-based dense head (mmdet AnchorHead)')
    loader_cfg = cfg.get(f'{args.split}_dataloader').copy()
    loader_cfg.update(
        batch_size=args.batch_size,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=args.shuffle, seed=0))
    return model, Runner.build_dataloader(loader_cfg)


def main() -> None:
    args = parse_args()
    check_figure_path(args.out)
    model, loader = build(args)
    cdfs = collect(model, loader, args.gammas, args.alpha, args.unit,
                   args.num_images, args.bins_per_decade)
    if cdfs[('positive', args.gammas[0])].num_samples == 0:
        print('warning: no positive anchor in these images')
    rows = plot(cdfs, args.gammas, args.out, args.dpi)
    write_csv(
        beside(args.out, '.csv'), ['set', 'gamma', 'fraction', 'cum_loss'],
        rows)
    text, figures = summarize(cdfs, args.gammas)
    if args.results:
        path = results_io.write_results(
            args.results,
            dict(
                config=args.config,
                checkpoint=args.checkpoint,
                split=args.split,
                num_images=args.num_images,
                unit=args.unit,
                sets=figures,
                text=text), sys.argv)
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
