"""Mini Table 1: the paper's central claims decided at the paper's
imbalance, more than 1000 negatives per positive anchor.

Every method is the same small RetinaNet (the demo's
``configs/demo/retina_r18_fpn_shapes.py`` narrowed: ResNet-18 with 16-128
channels, 32-channel FPN and GN towers, anchors of 2x the stride, IoU .5 /
.4) trained from scratch for the same iterations, seeds, data, batch and
optimizer, on synthetic shapes rendered in memory: 128 px images with one
object of 10-16 px, ~2 positive anchors among 3,069 (the imbalance is
measured on the training data with ``benchmarks/imbalance.py`` and printed).
COCO AP (pycocotools) on a fixed validation set every 125 iterations shows
whether AP still rises at the end.

Methods (``mini_table1_parts/methods.py``; each a set of config
overrides): alpha-CE at alpha .25 / .5 / .75 (Table 1a; ``fl_g0`` names
the .75 run, Table 1b's gamma 0 row), FL gamma .5 / 1 / 2 / 5 with the
paper's alpha for each gamma (Table 1b), FL* (Table 3), one-stage OHEM and
OHEM 1:3 at batch 128, nms .5 (Table 1d's best of each), the DR loss, and
CE without the prior. The divergence check runs ce_noprior and ce_a05 for
the first 100 iterations under the other optimizer too (by default the
paper's SGD, lr 0.01 x batch / 16, no clipping).

Claims (``mini_table1_parts/claims.py``): each with the means, the seed
range and a verdict -- holds, fails, or undecided (the seed ranges
overlap). Tables (``mini_table1_parts/tables.py``) go to the results file
(``--results NAME``: ``benchmarks/results/NAME.json``) that
docs/benchmarks.md and the README embed.

Resumable: each run writes ``run.json`` into its folder under
``--work-root``; a later invocation reuses a finished run with the same key
(regime, method, seed, optimizer, iterations; ``--force`` retrains).

Usage: python benchmarks/mini_table1.py [--regime tiny|quick]
       [--iters 500] [--seeds 0 1 2] [--methods fl_g2 ohem ...]
       [--optimizer adamw|sgd] [--jobs 2] [--threads 1]
       [--work-root DIR] [--out DIR] [--results NAME] [--force] [--quick]
``--quick``: 16 train / 8 val images, batch 2, 6 iterations, score
threshold 0, methods fl_g2 ohem dr ce_noprior, seed 0: a check that it
all runs, not a measurement.
"""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.mini_table1_parts.cli import main, parse_args  # noqa: E402

__all__ = ['main', 'parse_args']

if __name__ == '__main__':
    main()
