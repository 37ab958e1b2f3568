"""A CDF of the normalised, sorted loss in bounded memory (Figure 4).

The paper sorts ~1e7 per-sample losses and draws their cumulative share
(Sec. 5.1, "Analysis of the Focal Loss"). Keeping them all is ~80 MB per
(set, gamma) in float64, and more for larger runs. Instead the losses are
streamed into a log-spaced histogram holding the count and the loss sum of
each bin. Sorting from lowest to highest visits the bins in order, so the
CDF points at the bin edges are exact: (samples below the edge / all,
their loss / all loss), both exact sums. Between two edges the straight
line differs from the exact sorted CDF by at most (r - 1) / 4 of that bin's
loss share, r = 10^(1 / bins_per_decade) the ratio of neighbouring edges
(values in a bin differ by at most r, and a sorted run of values in
[a, r a] departs from its chord by at most c (r a - a) / 4 over c samples):
0.6 % of one bin's share at 100 bins per decade. Losses <= ``lo`` (1e-40,
e.g. float underflow to 0) share the first bin, their loss share below
1e-40 per sample; losses > ``hi`` share the last bin, which is counted but
not bounded (``num_above_range``).
"""
import math
from typing import Tuple

import numpy as np
import torch


class StreamingCDF:
    """CDF of the normalised, sorted loss from a log-spaced histogram.

    Args:
        lo, hi: Range of the log-spaced bins; values <= lo (zeros
            included) fall in the first bin, values > hi in the last.
        bins_per_decade: Resolution; r = 10^(1/bins_per_decade) is the
            ratio of neighbouring edges and bounds the error (see module).
    """

    def __init__(self,
                 lo: float = 1e-40,
                 hi: float = 1e4,
                 bins_per_decade: int = 100) -> None:
        if not 0 < lo < hi or bins_per_decade < 1:
            raise ValueError(f'need 0 < lo < hi and bins_per_decade >= 1, '
                             f'got lo={lo}, hi={hi}, '
                             f'bins_per_decade={bins_per_decade}')
        n = math.ceil(math.log10(hi / lo) * bins_per_decade)
        self.ratio = 10**(1 / bins_per_decade)
        self.edges = torch.logspace(
            math.log10(lo), math.log10(hi), n + 1, dtype=torch.float64)
        # bin i holds (edges[i-1], edges[i]]; 0: <= lo; n + 1: > hi.
        self.counts = torch.zeros(n + 2, dtype=torch.float64)
        self.sums = torch.zeros(n + 2, dtype=torch.float64)

    def update(self, values: torch.Tensor) -> None:
        """Adds the samples of ``values`` (any shape, >= 0, finite)."""
        v = values.detach().reshape(-1).to('cpu', torch.float64)
        if v.numel() == 0:
            return
        if not torch.isfinite(v).all() or (v < 0).any():
            raise ValueError('losses must be finite and >= 0')
        idx = torch.bucketize(v, self.edges)
        size = self.counts.numel()
        self.counts += torch.bincount(idx, minlength=size).double()
        self.sums += torch.bincount(idx, weights=v, minlength=size)

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum().item())

    @property
    def num_above_range(self) -> int:
        return int(self.counts[-1].item())

    def curve(self) -> Tuple[np.ndarray, np.ndarray]:
        """(fraction of samples, cumulative normalised loss), from (0, 0)
        to (1, 1) at the upper edges of the non-empty bins; monotone."""
        keep = self.counts > 0
        c = torch.cumsum(self.counts, 0)[keep]
        s = torch.cumsum(self.sums, 0)[keep]
        if c.numel() == 0:
            return np.zeros(1), np.zeros(1)
        x = torch.cat([torch.zeros(1, dtype=c.dtype), c / c[-1]])
        total = s[-1].item()
        y = s / total if total > 0 else c / c[-1]  # all-zero: uniform
        y = torch.cat([torch.zeros(1, dtype=s.dtype), y])
        return x.numpy(), y.numpy()
