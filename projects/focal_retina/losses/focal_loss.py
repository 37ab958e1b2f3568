"""Fused sigmoid focal-loss family (Lin et al., "Focal Loss for Dense Object
Detection", 2017): alpha-balanced CE (eq. 3), FL (eq. 4-5), FL* (appendix A,
eq. 6-8) with the closed-form gradients of appendix B (eq. 9-11).

mmdet's ``FocalLoss`` on CPU one-hot encodes the labels and chains autograd
ops, each writing an N x K temporary to memory. Here loss and gradient come
out of one pass over cache-sized chunks of anchors, the gradient is kept for
``backward``, and no one-hot matrix is built: every element is treated as a
negative and the at most one positive per row is patched through an index.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor
from torch.autograd.function import once_differentiable

# mmdet's weight_reduce_loss divides by (avg_factor + eps); keep it so the
# values match mmdet exactly and avg_factor=0 does not divide by zero.
_EPS = torch.finfo(torch.float32).eps
# Elements per CPU chunk (2048 rows at K=80, 640 KiB per temporary): the
# chunk and its few temporaries stay in L2/L3 between the ~10 passes, yet
# each op is large enough to amortise its OpenMP fork/join. Measured on
# 2 cores: 1024-4096 rows are within noise, 16k rows 2x slower.
_CPU_CHUNK_ELEMS = 2048 * 80
_CUDA_CHUNK_ELEMS = 2**24
_REDUCTIONS = ('none', 'mean', 'sum')
Scale = Union[Tensor, float]


def _check_params(gamma: float, alpha: Optional[float], star: bool,
                  star_beta: float, reduction: str) -> None:
    """Raise ValueError on hyper-parameters outside the paper's domain."""
    if not gamma >= 0:  # also rejects NaN
        raise ValueError(f'gamma must be >= 0, got gamma={gamma!r}')
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f'alpha must be None or in [0, 1], got '
                         f'alpha={alpha!r}')
    if star and not gamma > 0:
        raise ValueError('FL* (star=True) divides by gamma, so gamma must '
                         f'be > 0, got gamma={gamma!r}')
    if star_beta != star_beta:
        raise ValueError(f'star_beta must be a number, got {star_beta!r}')
    if reduction not in _REDUCTIONS:
        raise ValueError(f'reduction must be one of {_REDUCTIONS}, got '
                         f'reduction={reduction!r}')


def _negative_terms(x: Tensor, scale: Scale, gamma: float, star: bool,
                    beta: float, loss: Tensor, grad: Optional[Tensor]) -> None:
    """Scaled loss and d loss / dx of every element taken as a negative.

    With y = -1 (eq. 6) x_t = -x, so for p = sigmoid(x): p_t = 1 - p,
    1 - p_t = p and -log(p_t) = softplus(x), which is finite for any x
    (no log of a rounded probability). A positive with logit x has the loss
    of a negative at -x and the negated gradient, so this one routine serves
    both. Writes ``scale * loss`` into ``loss`` and ``scale * grad`` into
    ``grad``; alpha_t is folded into ``scale`` by the caller.
    """
    if star:
        # Eq. 7-8: FL* = -log sigmoid(gamma x_t + beta) / gamma
        # = softplus(gamma x - beta) / gamma; eq. 11: y (p*_t - 1)
        # = sigmoid(gamma x - beta).
        u = torch.mul(x, gamma).sub_(beta)
        torch.mul(F.softplus(u), scale / gamma, out=loss)
        if grad is not None:
            torch.mul(u.sigmoid_(), scale, out=grad)
        return
    p = torch.sigmoid(x)
    nll = F.softplus(x)  # -log(p_t)
    if gamma == 0:
        # Eq. 3 and eq. 9: y (p_t - 1) = p.
        torch.mul(nll, scale, out=loss)
        if grad is not None:
            torch.mul(p, scale, out=grad)
        return
    # Modulating factor (1 - p_t)^gamma = p^gamma (eq. 4), times weights.
    mod = p * p if gamma == 2 else torch.pow(p, gamma)
    mod.mul_(scale)
    torch.mul(mod, nll, out=loss)  # eq. 5
    if grad is not None:
        # Eq. 10 with y = -1: p^gamma (p + gamma (1 - p) softplus(x)).
        # Forming 1 - p explicitly (not gamma*loss - gamma*p*loss) avoids
        # cancellation for large x.
        torch.mul(mod, p, out=grad)
        grad.addcmul_(torch.rsub(p, 1), loss, value=gamma)


def _fused(pred: Tensor, labels: Tensor, weight: Optional[Tensor],
           gamma: float, alpha: Optional[float], star: bool, beta: float,
           factor: float, reduce: bool, chunk_size: Optional[int],
           need_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Loss (scalar if ``reduce`` else N x K) and its scaled gradient."""
    n, k = pred.shape
    cdtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    neg_alpha = 1.0 if alpha is None else 1.0 - alpha
    pos_alpha = 1.0 if alpha is None else alpha
    if chunk_size is not None:
        rows = max(int(chunk_size), 1)
    else:
        # GPUs want big launches (chunks there only bound the memory).
        elems = _CUDA_CHUNK_ELEMS if pred.is_cuda else _CPU_CHUNK_ELEMS
        rows = max(elems // max(k, 1), 1)

    # Everything multiplying the loss (weights, alpha_t, loss_weight and
    # the reduction's 1/denominator) is applied inside the pass, so the
    # saved gradient needs only grad_output in backward.
    if weight is not None:
        weight = weight.to(cdtype)
        if weight.numel() == n:
            weight = weight.reshape(n, 1)  # per anchor (RetinaHead)
        else:
            weight = weight.reshape(n, k)  # per element, maybe flattened
    pos = torch.nonzero(labels < k).squeeze(1)
    cols = labels[pos]
    pos_scale = pos_alpha * factor
    if weight is not None:
        pos_w = weight[pos, 0] if weight.size(1) == 1 else weight[pos, cols]
        pos_scale = pos_w * pos_scale
    pos_loss = pred.new_empty(pos.shape, dtype=cdtype)
    pos_grad = torch.empty_like(pos_loss) if need_grad else None
    _negative_terms(-pred[pos, cols].to(cdtype), pos_scale, gamma, star, beta,
                    pos_loss, pos_grad)
    if need_grad:
        pos_grad.neg_()

    grad = pred.new_empty((n, k), dtype=cdtype) if need_grad else None
    out = None if reduce else pred.new_empty((n, k))
    direct = out is not None and out.dtype == cdtype
    starts = list(range(0, n, rows))
    edges = torch.tensor(starts + [n], device=pos.device)
    bounds = torch.searchsorted(pos, edges).tolist()  # positives per chunk
    sums = []
    if weight is not None and weight.size(1) == 1:
        weight = weight * (neg_alpha * factor)  # per-row scale, N x 1

    for i, start in enumerate(starts):
        end = min(start + rows, n)
        x = pred[start:end].to(cdtype)  # a view when already cdtype
        if weight is None:
            scale = neg_alpha * factor
        elif weight.size(1) == 1:
            scale = weight[start:end]
        else:
            scale = weight[start:end] * (neg_alpha * factor)
        loss = out[start:end] if direct else torch.empty_like(x)
        g = grad[start:end] if need_grad else None
        _negative_terms(x, scale, gamma, star, beta, loss, g)
        # Patch this chunk's positives through an index (no one-hot).
        b0, b1 = bounds[i], bounds[i + 1]
        if b1 > b0:
            r, c = pos[b0:b1] - start, cols[b0:b1]
            loss[r, c] = pos_loss[b0:b1]
            if need_grad:
                g[r, c] = pos_grad[b0:b1]
        if reduce:
            sums.append(loss.sum())
        elif not direct:
            out[start:end] = loss  # cast to the half-precision output
    if not reduce:
        return out, grad
    # float32 chunk sums (pairwise, accurate), added up in float64.
    total = torch.stack(sums).double().sum() if sums else pred.new_zeros(())
    return total.to(cdtype), grad


class _FocalFamilyFunction(torch.autograd.Function):
    """Autograd wrapper: the forward pass also yields the gradient."""

    @staticmethod
    def forward(ctx, pred: Tensor, labels: Tensor, weight: Optional[Tensor],
                params: tuple, need_grad: bool) -> Tensor:
        loss, grad = _fused(pred, labels, weight, *params, need_grad)
        ctx.params = params
        ctx.grad = grad
        ctx.save_for_backward(pred, labels, weight)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple:
        pred, labels, weight = ctx.saved_tensors
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # backward again through a retained graph
            grad = _fused(pred, labels, weight, *ctx.params, True)[1]
        # Handing the buffer over (in place, no extra reference) lets
        # autograd adopt it instead of copying N x K values; on CPU the
        # usual grad_out == 1 skips the multiplication altogether.
        if grad_out.is_cuda or grad_out.numel() != 1 or grad_out.item() != 1:
            grad.mul_(grad_out)
        return grad.to(pred.dtype), None, None, None, None


def focal_family_loss(pred: Tensor,
                      target: Tensor,
                      weight: Optional[Tensor] = None,
                      gamma: float = 2.0,
                      alpha: Optional[float] = 0.25,
                      star: bool = False,
                      star_beta: float = 0.0,
                      reduction: str = 'mean',
                      avg_factor: Optional[Union[float, Tensor]] = None,
                      loss_weight: float = 1.0,
                      chunk_size: Optional[int] = None) -> Tensor:
    """Sigmoid focal loss (eq. 5), alpha-balanced CE (eq. 3) or FL* (eq. 8).

    Args:
        pred (Tensor): Logits of shape (N, K); float32, float16, bfloat16
            or float64 (half inputs are computed in float32).
        target (Tensor): Integer labels of shape (N,) in [0, K]; K is
            background (mmdet convention).
        weight (Tensor, optional): Per-anchor (N,) or per-element (N, K)
            (or flattened N*K) weights, e.g. 0 for ignored anchors. Treated
            as a constant (no gradient).
        gamma (float): Focusing parameter gamma >= 0; 0 gives CE (eq. 3).
        alpha (float, optional): alpha_t balance, alpha for positives and
            1 - alpha for negatives; None for no balancing (eq. 4).
        star (bool): Use FL* (appendix A, eq. 7-8) instead of FL.
        star_beta (float): beta of FL* (eq. 7).
        reduction (str): 'none' (N, K), 'mean' or 'sum', as in mmdet.
        avg_factor (float | Tensor, optional): With 'mean', the sum is
            divided by ``avg_factor + eps`` (mmdet's weight_reduce_loss);
            ignored with 'none'; an error with 'sum'.
        loss_weight (float): Multiplier of the loss.
        chunk_size (int, optional): Rows per fused pass; None: about
            160k elements per chunk on CPU, 16M on CUDA.

    Returns:
        Tensor: (N, K) loss in pred's dtype for 'none', else a scalar
        (float32 for half inputs, so that sums cannot overflow). 'mean'
        over an empty input is 0 (not NaN).
    """
    _check_params(gamma, alpha, star, star_beta, reduction)
    if pred.dim() != 2 or target.shape != pred.shape[:1]:
        raise ValueError('expected pred (N, K) and integer labels (N,), got '
                         f'{tuple(pred.shape)} and {tuple(target.shape)}')
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f'target must hold integer labels, got '
                         f'{target.dtype}')
    n, k = pred.shape
    if n > 0:
        lo, hi = torch.aminmax(target)
        if lo.item() < 0 or hi.item() > k:
            raise ValueError(f'labels must be in [0, {k}] ({k} = '
                             f'background), got [{lo.item()}, {hi.item()}]')
    if weight is not None and weight.numel() not in (n, n * k):
        raise ValueError(f'weight must have N={n} or N*K={n * k} elements,'
                         f' got shape {tuple(weight.shape)}')
    factor = float(loss_weight)
    if reduction == 'mean':
        if avg_factor is not None:
            factor /= float(avg_factor) + _EPS
        elif n * k > 0:
            factor /= n * k
    elif reduction == 'sum' and avg_factor is not None:
        raise ValueError('avg_factor can not be used with reduction="sum"')
    reduce = reduction != 'none'
    params = (gamma, alpha, star, float(star_beta), factor, reduce, chunk_size)
    # Skip the gradient under no_grad or for a constant pred (inference).
    need_grad = pred.requires_grad and torch.is_grad_enabled()
    return _FocalFamilyFunction.apply(pred.contiguous(), target, weight,
                                      params, need_grad)


@MODELS.register_module()
class FocalFamilyLoss(nn.Module):
    """FL / alpha-balanced CE / FL* for mmdet heads (e.g. RetinaHead).

    A drop-in for mmdet's ``FocalLoss`` (same call convention) computed by
    :func:`focal_family_loss` with closed-form gradients (appendix B).

    Args:
        use_sigmoid (bool): Must be True (sigmoid classifier, section 4).
        gamma, alpha, star, star_beta, reduction, loss_weight, chunk_size:
            As in :func:`focal_family_loss`; hyper-parameters are checked
            here (ValueError). Defaults: FL with gamma=2, alpha=0.25.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: Optional[float] = 0.25,
                 star: bool = False,
                 star_beta: float = 0.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 chunk_size: Optional[int] = None) -> None:
        super().__init__()
        if use_sigmoid is not True:
            raise ValueError('FocalFamilyLoss only supports the sigmoid '
                             f'form, got use_sigmoid={use_sigmoid!r}')
        _check_params(gamma, alpha, star, star_beta, reduction)
        if chunk_size is not None and not chunk_size >= 1:
            raise ValueError(f'chunk_size must be None or >= 1, got '
                             f'chunk_size={chunk_size!r}')
        self.use_sigmoid = use_sigmoid
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)
        self.star = star
        self.star_beta = float(star_beta)
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.chunk_size = chunk_size

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Compute the loss; see :func:`focal_family_loss` for shapes."""
        return focal_family_loss(
            pred,
            target,
            weight,
            gamma=self.gamma,
            alpha=self.alpha,
            star=self.star,
            star_beta=self.star_beta,
            reduction=reduction_override or self.reduction,
            avg_factor=avg_factor,
            loss_weight=self.loss_weight,
            chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        """Hyper-parameters shown by ``print(module)``."""
        return (f'gamma={self.gamma}, alpha={self.alpha}, star={self.star}, '
                f'star_beta={self.star_beta}, reduction={self.reduction}')
