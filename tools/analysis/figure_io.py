"""Shared by the analysis tools: matplotlib on the Agg backend, saving
figures as PNG (or SVG / PDF by extension) at an exact pixel size, and the
CSV files of the plotted points written beside the figures.

mmdet's analysis tools call ``plt.savefig`` (and ``plt.show`` without
``--out``); here a figure is always written to a file, never shown, so the
tools run on machines without a display, and ``bbox_inches`` is left unset
so that a PNG has exactly ``figsize x dpi`` pixels.
"""
import csv
import os
import os.path as osp
import sys
from typing import Iterable, Sequence

import matplotlib

matplotlib.use('Agg')  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FORMATS = ('png', 'svg', 'pdf')


def fail(msg: str) -> None:
    """``<tool>: error: msg`` on stderr, exit status 2 (as the tools/)."""
    from projects.focal_retina.engine.cli import fail as _fail
    _fail(msg)


def check_figure_path(path: str) -> str:
    """The figure path, failing unless it ends in .png, .svg or .pdf."""
    ext = osp.splitext(path)[1].lower().lstrip('.')
    if ext not in FORMATS:
        fail(f'figure {path!r}: expected a .png, .svg or .pdf file name')
    return path


def new_figure(width: float, height: float, dpi: int, ncols: int = 1):
    """A figure of ``width x height`` inches with ``ncols`` axes."""
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), dpi=dpi)
    return fig, axes


def save_figure(fig, path: str) -> str:
    """Writes ``fig`` to ``path`` (format from the extension) and closes it.

    Returns:
        The path written.
    """
    check_figure_path(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    plt.close(fig)
    print(f'figure written to {path}')
    return path


def beside(path: str, suffix: str) -> str:
    """``fig.png`` -> ``fig<suffix>``: the data file next to a figure."""
    return osp.splitext(path)[0] + suffix


def write_csv(path: str, header: Sequence[str],
              rows: Iterable[Sequence]) -> str:
    """Writes ``rows`` under ``header``; returns the path."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    print(f'points written to {path}')
    return path
