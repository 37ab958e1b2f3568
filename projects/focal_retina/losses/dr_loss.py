"""Distributional-ranking (DR) loss: Qian, Chen, Li, Jin, "DR Loss: Improving
Object Detection by Distributional Ranking", CVPR 2020 (arXiv 1907.10156),
as its public code (idstcv/DR_loss, ``sigmoid_dr_loss.py``) computes it.

With p = sigmoid(logit) of every (anchor, class) score of a group:

* negatives: every (anchor, class) pair of a non-ignored anchor except the
  anchor's own class at a positive anchor -- so the *wrong* classes at
  positive anchors are negatives too; positives: (positive anchor, class);
* D- = sum q- p-, q- = softmax(p- / lambda-) (the hardest negatives weigh
  most; Sec. 3.2 "distribution of negatives");
* D+ = sum q+ p+, q+ = softmax(-p+ / lambda+) (the hardest positives weigh
  most); D+ = 1 when the group has no positive (public code);
* loss = (tau / L) * log(1 + exp(L (D- - D+ + m))) (Sec. 3.3, the smoothed
  logistic ranking loss of the two expectations).

Group: the public code takes each softmax over the whole per-process batch
flattened (``grouping='per_batch'``, our default: it is what produced the
published models); the paper says "for each image" (``'per_image'``, the
mean of one DR loss per image).

Normalisation (not published upstream: the modified maskrcnn-benchmark
``loss.py`` is not in the repository). D- and D+ are weighted *averages*, so
the DR loss is already of order one whatever the number of anchors or
objects; dividing it by the number of positives (~10^2 per batch) as the
focal loss is divided would shrink it as much against the box loss. We
therefore apply no ``avg_factor`` (accepted for the call convention,
ignored): the total is ``loss_weight`` x the DR loss (per_batch) or the
mean over images of the per-image DR losses (per_image,
``reduction='mean'``). Under DDP each process computes this over its own
images and DDP averages the gradients:
per_image is then exactly the mean over all images of the global batch for
any split over processes (equal images per process); per_batch is the mean
of one DR loss per process, whose softmax pools only that process's images,
so its value depends on the images per process (not on the process count):
8 GPUs x 2 images (the public code) differs from 1 x 16. Nothing is
all-reduced.

Implementation: a custom autograd function over cache-sized chunks of
anchors. The forward pass streams the logits once per group (a log-sum-exp
whose shift is the constant 1, as p <= 1, or for tiny lambda- the exact
maximum per chunk, the chunks then rescaled to the group's), and the
backward pass writes the closed-form gradient straight into the one N x K
gradient buffer. No one-hot or mask of N x K is built (positives and
ignored rows are patched through their indices) and no N x K activation is
kept for backward.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..utils.arguments import check_arguments

GROUPINGS = ('per_batch', 'per_image')
_REDUCTIONS = ('none', 'mean', 'sum')
# Elements per chunk, as in focal_loss.py: a CPU chunk and its three
# temporaries stay in cache between passes; GPUs want big launches.
_CPU_CHUNK_ELEMS = 2048 * 80
_CUDA_CHUNK_ELEMS = 2**24
_NEG_INF = float('-inf')


def _check_params(margin: float, pos_lambda: float, neg_lambda: float,
                  L: float, tau: float, grouping: str, reduction: str,
                  loss_weight: float) -> None:
    """Raise ValueError on settings outside the DR loss's domain."""
    for name, value in (('pos_lambda', pos_lambda), ('neg_lambda', neg_lambda),
                        ('L', L), ('tau', tau)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 < value < math.inf:
            raise ValueError(f'{name} must be a finite number > 0, got '
                             f'{name}={value!r}')
    for name, value in (('margin', margin), ('loss_weight', loss_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value < math.inf:
            raise ValueError(f'{name} must be a finite number >= 0, got '
                             f'{name}={value!r}')
    if grouping not in GROUPINGS:
        raise ValueError(f'grouping must be one of {GROUPINGS}, got '
                         f'grouping={grouping!r}')
    if reduction not in _REDUCTIONS:
        raise ValueError(f'reduction must be one of {_REDUCTIONS}, got '
                         f'reduction={reduction!r}')


class _Layout:
    """Where groups, chunks, positives and ignored anchors lie in the logits.

    Args:
        n, k: Rows (anchors) and columns (classes) of the logits.
        groups: (start, end) rows of each group (whole batch or image).
        valid: (N,) bool, False for ignored anchors.
        labels: (N,) labels, K = background.
        rows: Rows per chunk; chunks never cross a group boundary.
    """

    def __init__(self, n: int, k: int, groups: Sequence[Tuple[int, int]],
                 valid: Tensor, labels: Tensor, rows: int) -> None:
        self.groups = list(groups)
        # Positive (row, class) pairs and ignored rows, ascending. Ignored
        # anchors are neither positive nor negative; both lists are short
        # (~0.1% and ~5% of the rows), so they are patched by index instead
        # of masking every element.
        self.pos_rows = torch.nonzero((labels < k) & valid).squeeze(1)
        self.pos_cols = labels[self.pos_rows]
        self.ign_rows = torch.nonzero(~valid).squeeze(1)
        self.chunks: List[List[Tuple[int, int]]] = [[
            (s, min(s + rows, end)) for s in range(start, end, rows)
        ] for start, end in self.groups]
        edges = {b for g in self.groups for b in g}
        for chunks in self.chunks:
            edges.update(s for s, _ in chunks)
        edges = sorted(edges)
        where = torch.tensor(edges, device=labels.device)
        # Index into pos_rows / ign_rows of every group and chunk boundary.
        self._pos_at = dict(
            zip(edges,
                torch.searchsorted(self.pos_rows, where).tolist()))
        self._ign_at = dict(
            zip(edges,
                torch.searchsorted(self.ign_rows, where).tolist()))

    def positives(self, start: int, end: int) -> Tuple[Tensor, Tensor]:
        """Rows and classes of the positives in rows [start, end)."""
        b0, b1 = self._pos_at[start], self._pos_at[end]
        return self.pos_rows[b0:b1], self.pos_cols[b0:b1]

    def parts(self, start: int, end: int) -> Tuple[Tensor, Tensor, Tensor]:
        """Chunk-relative positive rows, their classes, ignored rows."""
        rows, cols = self.positives(start, end)
        ign = self.ign_rows[self._ign_at[start]:self._ign_at[end]]
        return rows - start, cols, ign - start


def _chunk_neg_stats(x: Tensor, r: Tensor, c: Tensor, ign: Tensor,
                     neg_lambda: float,
                     exact_max: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(shift m, sum e, sum e p) over one chunk's negatives.

    e = exp((p - m) / lambda-) with m >= every negative p, so e <= 1 and
    nothing overflows. Since p <= 1, m = 1 works without a pass over the
    chunk while exp(-1 / lambda-) stays a normal number (lambda- >= 1/80
    in float32; the default is 0.08); below that m is the exact maximum,
    so that the largest terms cannot all underflow. The excluded entries
    (ignored rows, positives) get exponent -inf, i.e. e = 0.

    Args:
        x: (R, K) logits of the chunk in the compute dtype.
        r, c: Chunk-relative rows and classes of the chunk's positives.
        ign: Chunk-relative ignored rows.
    """
    if exact_max:
        # Max over the negatives in logit space (sigmoid is monotone);
        # the positive rows (few) are recomputed without their own class.
        row_max = x.amax(1)
        if r.numel():
            xp = x[r]
            xp[torch.arange(r.numel(), device=x.device), c] = _NEG_INF
            row_max[r] = xp.amax(1)
        row_max.index_fill_(0, ign, _NEG_INF)
        m = row_max.max().sigmoid()  # 0 if the chunk has no negative
    else:
        m = x.new_ones(())
    p = torch.sigmoid(x)
    a = 1.0 / neg_lambda
    e = torch.add(m * -a, p, alpha=a)  # (p - m) / lambda in one pass
    e.index_fill_(0, ign, _NEG_INF)
    e[r, c] = _NEG_INF
    e.exp_()
    return m, e.sum(), torch.dot(e.view(-1), p.view(-1))


def _group_forward(pred: Tensor, lay: _Layout, g: int, cdtype: torch.dtype,
                   neg_lambda: float, pos_lambda: float) -> Tuple[Tensor, ...]:
    """D-, D+ of group ``g`` and what backward needs: (m, 1/S-)."""
    # exp(-1/lambda) must stay normal for the constant shift m = 1.
    exact_max = 1.0 / neg_lambda > (80.0 if cdtype == torch.float32 else 700.0)
    ms, ss, ts = [], [], []
    for s, e in lay.chunks[g]:
        stats = _chunk_neg_stats(pred[s:e].to(cdtype), *lay.parts(s, e),
                                 neg_lambda, exact_max)
        ms.append(stats[0])
        ss.append(stats[1])
        ts.append(stats[2])
    zero = pred.new_zeros((), dtype=torch.float64)
    if ms:
        # Rescale every chunk to the group's largest shift (online
        # log-sum-exp); the few scalars are combined in float64.
        m_c = torch.stack(ms).double()
        big_m = m_c.max()
        w = torch.exp((m_c - big_m) / neg_lambda)
        s_sum = (torch.stack(ss).double() * w).sum()
        t_sum = (torch.stack(ts).double() * w).sum()
    else:  # an empty group
        big_m, s_sum, t_sum = zero, zero, zero
    # No negative at all: D- = 0, as the public code's sum over nothing.
    inv_s = torch.where(s_sum > 0, 1.0 / s_sum.clamp(min=1e-300), zero)
    d_neg = t_sum * inv_s

    rows, cols = lay.positives(*lay.groups[g])
    if rows.numel():
        p_pos = pred[rows, cols].to(cdtype).sigmoid()
        q_pos = torch.softmax(-p_pos / pos_lambda, dim=0)
        d_pos = (q_pos * p_pos).sum().double()
    else:  # no positive: D+ = 1 (public code)
        d_pos = zero + 1.0
    return d_neg, d_pos, big_m, inv_s


def _group_backward(pred: Tensor, grad: Tensor, lay: _Layout, g: int,
                    params: Tuple[float, float], saved: Sequence[float],
                    g_neg: float, g_pos: float) -> None:
    """Write d(g_neg D- + g_pos D+)/d logits of group ``g`` into ``grad``.

    dD-/dp_j = q_j (1 + (p_j - D-) / lambda-) for a negative and
    dD+/dp_j = q_j (1 - (p_j - D+) / lambda+) for a positive, times
    dp/dx = p (1 - p); ignored anchors get 0. q_j = e_j / S-.
    """
    neg_lambda, pos_lambda = params
    d_neg, d_pos, big_m, inv_s = saved
    a = 1.0 / neg_lambda
    scale = g_neg * inv_s
    cdtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    # e = exp(a p + e0) and t = scale (1 + (p - D-) a) = t0 + t1 p, each in
    # one pass. Excluded entries may overflow here (positives above the
    # shift): they are overwritten below.
    e0 = torch.tensor(-big_m * a, dtype=cdtype, device=pred.device)
    t0 = torch.tensor(
        scale * (1.0 - d_neg * a), dtype=cdtype, device=pred.device)
    for s, e in lay.chunks[g]:
        r, c, ign = lay.parts(s, e)
        p = torch.sigmoid(pred[s:e].to(cdtype))
        q = torch.add(e0, p, alpha=a).exp_()
        t = torch.add(t0, p, alpha=scale * a)
        p.addcmul_(p, p, value=-1.0)  # p (1 - p), in place
        out = grad[s:e]
        if out.dtype == cdtype:
            torch.mul(q, t, out=out)
            out.mul_(p)
        else:  # half-precision logits: one cast per chunk
            out.copy_(q.mul_(t).mul_(p))
        out.index_fill_(0, ign, 0.0)
    rows, cols = lay.positives(*lay.groups[g])
    if rows.numel():
        p_pos = pred[rows, cols].to(cdtype).sigmoid()
        q_pos = torch.softmax(-p_pos / pos_lambda, dim=0)
        dd = q_pos * (1.0 - (p_pos - d_pos) / pos_lambda)
        grad[rows, cols] = (dd * p_pos * (1.0 - p_pos) * g_pos).to(grad.dtype)


class _DRFunction(torch.autograd.Function):
    """(D-, D+) per group from the logits, with a closed-form backward."""

    @staticmethod
    def forward(ctx, pred: Tensor, lay: _Layout,
                params: Tuple[float, float]) -> Tuple[Tensor, Tensor]:
        cdtype = torch.float64 if pred.dtype == torch.float64 \
            else torch.float32
        with torch.autocast(pred.device.type, enabled=False):
            per_group = [
                _group_forward(pred, lay, g, cdtype, *params)
                for g in range(len(lay.groups))
            ]
        saved = torch.stack([torch.stack(t) for t in per_group])  # (G, 4)
        ctx.lay, ctx.params = lay, params
        ctx.save_for_backward(pred, saved)
        return saved[:, 0].to(cdtype), saved[:, 1].to(cdtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_neg: Tensor, g_pos: Tensor) -> tuple:
        pred, saved = ctx.saved_tensors
        # One host transfer for all scalars of all groups.
        saved, g_neg, g_pos = (saved.tolist(), g_neg.tolist(), g_pos.tolist())
        grad = torch.empty_like(pred)
        with torch.autocast(pred.device.type, enabled=False):
            for g in range(len(ctx.lay.groups)):
                _group_backward(pred, grad, ctx.lay, g, ctx.params, saved[g],
                                g_neg[g], g_pos[g])
        return grad, None, None


def _groups(n: int, grouping: str,
            num_images: Optional[int]) -> List[Tuple[int, int]]:
    """Row ranges of the softmax groups (image-major rows, see module)."""
    if grouping == 'per_batch':
        return [(0, n)]
    if isinstance(num_images, bool) or not isinstance(num_images, int) \
            or num_images < 1 or n % num_images:
        raise ValueError(
            "grouping='per_image' needs num_images, a positive int dividing "
            f'the {n} rows (image-major: all anchors of image 0, then '
            f'image 1, ...), got num_images={num_images!r}')
    m = n // num_images
    return [(i * m, (i + 1) * m) for i in range(num_images)]


def dr_loss(pred: Tensor,
            target: Tensor,
            weight: Optional[Tensor] = None,
            margin: float = 0.5,
            pos_lambda: float = 1.0,
            neg_lambda: float = 0.1 / math.log(3.5),
            L: float = 6.0,
            tau: float = 4.0,
            grouping: str = 'per_batch',
            num_images: Optional[int] = None,
            reduction: str = 'mean',
            loss_weight: float = 1.0,
            chunk_size: Optional[int] = None) -> Tensor:
    """The DR loss of sigmoid logits (see the module docstring).

    Args:
        pred (Tensor): Logits (N, K), N = images x anchors, image-major;
            float32/64 or half (computed in float32 internally).
        target (Tensor): Integer labels (N,) in [0, K]; K = background.
        weight (Tensor, optional): (N,) anchor weights, 0 = ignored, 1 =
            used (the DR loss has no per-anchor weighting).
        margin, pos_lambda, neg_lambda, L, tau: m, lambda+, lambda-, L,
            tau of the paper (defaults: the public code's).
        grouping (str): 'per_batch' (one softmax over all N rows) or
            'per_image' (one per image; needs ``num_images``).
        num_images (int, optional): Images in the batch (per_image).
        reduction (str): Over the groups: 'mean', 'sum' or 'none' (the
            per-group losses, shape (G,)).
        loss_weight (float): Multiplier of the loss.
        chunk_size (int, optional): Rows per chunk; None: ~160k elements
            on CPU, 16M on CUDA.

    Returns:
        Tensor: Scalar (or (G,)) in float32 (float64 for float64 logits).
    """
    _check_params(margin, pos_lambda, neg_lambda, L, tau, grouping, reduction,
                  loss_weight)
    if pred.dim() != 2 or pred.size(1) < 1 \
            or target.shape != pred.shape[:1]:
        raise ValueError('expected pred (N, K >= 1) and integer labels '
                         f'(N,), got {tuple(pred.shape)} and '
                         f'{tuple(target.shape)}')
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f'target must hold integer labels, got '
                         f'{target.dtype}')
    n, k = pred.shape
    if n > 0:
        lo, hi = torch.aminmax(target)
        if lo.item() < 0 or hi.item() > k:
            raise ValueError(f'labels must be in [0, {k}] ({k} = '
                             f'background), got [{lo.item()}, {hi.item()}]')
    if weight is None:
        valid = torch.ones(n, dtype=torch.bool, device=pred.device)
    else:
        if weight.numel() != n:
            raise ValueError(f'weight must have one entry per anchor '
                             f'(N={n}), got shape {tuple(weight.shape)}')
        weight = weight.reshape(n)
        if ((weight != 0) & (weight != 1)).any().item():
            raise ValueError('the DR loss takes anchor weights 0 (ignored) '
                             'or 1 (used) only; got other values')
        valid = weight != 0
    if chunk_size is None:
        elems = _CUDA_CHUNK_ELEMS if pred.is_cuda else _CPU_CHUNK_ELEMS
        rows = max(elems // k, 1)
    else:
        rows = max(int(chunk_size), 1)
    lay = _Layout(n, k, _groups(n, grouping, num_images), valid, target, rows)
    d_neg, d_pos = _DRFunction.apply(pred.contiguous(), lay,
                                     (float(neg_lambda), float(pos_lambda)))
    # Eq. of Sec. 3.3: (tau / L) log(1 + exp(L (D- - D+ + m))) = softplus.
    with torch.autocast(pred.device.type, enabled=False):
        per_group = F.softplus(L * (d_neg - d_pos + margin)) * (tau / L)
        if reduction == 'mean':
            per_group = per_group.mean()
        elif reduction == 'sum':
            per_group = per_group.sum()
        return per_group * loss_weight


@MODELS.register_module()
@check_arguments
class DRLoss(nn.Module):
    """The DR loss as ``loss_cls`` of a RetinaNet head (Qian et al. 2020).

    A drop-in for the focal loss with mmdet's call convention; the head must
    call it once over all FPN levels (``FocalRetinaHead`` does), since the
    softmax over anchors is not a sum over levels.

    Args:
        use_sigmoid (bool): Must be True (sigmoid scores, as RetinaNet).
        margin (float): m, the ranking margin (public code: 0.5).
        pos_lambda (float): lambda+ of the positives' softmax (1).
        neg_lambda (float): lambda- of the negatives' softmax
            (0.1 / ln 3.5).
        L (float): Smoothness of the logistic ranking loss (6).
        tau (float): Scale of the loss (4).
        grouping (str): 'per_batch' (public code, default) or 'per_image'
            (the paper's wording).
        reduction (str): Over groups: 'mean' (default), 'sum' or 'none'.
        loss_weight (float): Multiplier of the loss.
        chunk_size (int, optional): Rows per chunk (None: automatic).
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 margin: float = 0.5,
                 pos_lambda: float = 1.0,
                 neg_lambda: float = 0.1 / math.log(3.5),
                 L: float = 6.0,
                 tau: float = 4.0,
                 grouping: str = 'per_batch',
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 chunk_size: Optional[int] = None) -> None:
        super().__init__()
        if use_sigmoid is not True:
            raise ValueError('DRLoss ranks sigmoid scores, so use_sigmoid '
                             f'must be True, got {use_sigmoid!r}')
        _check_params(margin, pos_lambda, neg_lambda, L, tau, grouping,
                      reduction, loss_weight)
        if chunk_size is not None and (isinstance(chunk_size, bool)
                                       or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise ValueError(f'chunk_size must be None or an int >= 1, '
                             f'got chunk_size={chunk_size!r}')
        self.use_sigmoid = use_sigmoid
        self.margin = float(margin)
        self.pos_lambda = float(pos_lambda)
        self.neg_lambda = float(neg_lambda)
        self.L = float(L)
        self.tau = float(tau)
        self.grouping = grouping
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self.chunk_size = chunk_size

    # reduction='none' gives one loss per group (softmax over a group of
    # anchors), not per anchor: per-anchor selection (OHEM) can not use it.
    elementwise = False

    @property
    def needs_num_images(self) -> bool:
        """Whether the head must pass ``num_images`` (per_image)."""
        return self.grouping == 'per_image'

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None,
                num_images: Optional[int] = None) -> Tensor:
        """The DR loss; ``avg_factor`` is ignored (see module docstring).

        Args:
            pred (Tensor): (N*M, K) logits of N images, image-major.
            target (Tensor): (N*M,) labels, K = background.
            weight (Tensor, optional): (N*M,) 0 = ignored anchor.
            avg_factor: Accepted for the call convention; unused.
            reduction_override (str, optional): Overrides ``reduction``.
            num_images (int, optional): N, needed by per_image.
        """
        return dr_loss(
            pred,
            target,
            weight,
            margin=self.margin,
            pos_lambda=self.pos_lambda,
            neg_lambda=self.neg_lambda,
            L=self.L,
            tau=self.tau,
            grouping=self.grouping,
            num_images=num_images,
            reduction=reduction_override or self.reduction,
            loss_weight=self.loss_weight,
            chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        """Settings shown by ``print(module)``."""
        return (f'margin={self.margin}, pos_lambda={self.pos_lambda}, '
                f'neg_lambda={self.neg_lambda:.5f}, L={self.L}, '
                f'tau={self.tau}, grouping={self.grouping}')
