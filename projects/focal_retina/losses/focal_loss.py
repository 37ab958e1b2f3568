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

from ..utils.arguments import check_arguments

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


def _patch(buf: Tensor, cols: Tensor, keep: Tensor, pos: Tensor) -> None:
    """Writes the positives' terms ``pos`` (R, 1) into ``buf`` (R, K) at
    ``cols`` (R, 1), except in the rows ``keep`` marks: no one-hot matrix
    and no host sync (a mask rather than a list of positive rows)."""
    buf.scatter_(1, cols, torch.where(keep, buf.gather(1, cols), pos))


def _fused(pred: Tensor, labels: Tensor, weight: Optional[Tensor],
           gamma: float, alpha: Optional[float], star: bool, beta: float,
           factor: Scale, reduce: bool, chunk_size: Optional[int],
           need_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Loss (scalar if ``reduce`` else N x K) and its scaled gradient.

    Free of host synchronisation (no ``nonzero``, ``.item()`` or
    ``.tolist()`` on device data), so a CUDA caller is never stalled: the
    at most one positive of a row is patched through a per-row column
    index and a mask, and the chunk bounds are Python integers.
    """
    n, k = pred.shape
    cdtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    neg_scale = (1.0 if alpha is None else 1.0 - alpha) * factor
    pos_scale = (1.0 if alpha is None else alpha) * factor
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
    # (N, 1): every row's label column (background rows: any column, the
    # mask keeps their negative term) and its term as a positive.
    cols = labels.clamp(0, max(k - 1, 0)).unsqueeze(1)
    keep = labels.ge(k).unsqueeze(1)  # not a positive
    if weight is not None:
        w = weight if weight.size(1) == 1 else weight.gather(1, cols)
        pos_scale = w * pos_scale
    x_pos = pred.gather(1, cols).to(cdtype) if k else pred.new_empty((n, 0))
    pos_loss = torch.empty_like(x_pos, dtype=cdtype)
    pos_grad = torch.empty_like(pos_loss) if need_grad else None
    _negative_terms(-x_pos, pos_scale, gamma, star, beta, pos_loss, pos_grad)
    if need_grad:
        pos_grad.neg_()

    grad = pred.new_empty((n, k), dtype=cdtype) if need_grad else None
    out = None if reduce else pred.new_empty((n, k))
    direct = out is not None and out.dtype == cdtype
    sums = []
    if weight is not None and weight.size(1) == 1:
        weight = weight * neg_scale  # per-row scale, N x 1
    for start in range(0, n if k else 0, rows):  # K = 0: nothing to do
        end = min(start + rows, n)
        x = pred[start:end].to(cdtype)  # a view when already cdtype
        if weight is None:
            scale = neg_scale
        elif weight.size(1) == 1:
            scale = weight[start:end]
        else:
            scale = weight[start:end] * neg_scale
        loss = out[start:end] if direct else torch.empty_like(x)
        g = grad[start:end] if need_grad else None
        _negative_terms(x, scale, gamma, star, beta, loss, g)
        if reduce or not direct:  # the loss chunk is not kept: patch now
            _patch(loss, cols[start:end], keep[start:end], pos_loss[start:end])
        if reduce:
            sums.append(loss.sum())
        elif not direct:
            out[start:end] = loss  # cast to the half-precision output
    # Kept buffers are patched once (fewer, larger ops than per chunk).
    if need_grad and k:
        _patch(grad, cols, keep, pos_grad)
    if not reduce:
        if direct and k:
            _patch(out, cols, keep, pos_loss)
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
        # (.item() only on the CPU: elsewhere it would wait for the device.)
        if grad_out.device.type != 'cpu' or grad_out.numel() != 1 or \
                grad_out.item() != 1:
            grad.mul_(grad_out)
        return grad.to(pred.dtype), None, None, None, None


def _dense_loss(pred: Tensor, target: Tensor, gamma: float,
                alpha: Optional[float], star: bool, beta: float,
                activated: bool) -> Tensor:
    """Element losses (N, K) for (N, K) targets in [0, 1], by autograd.

    mmdet's other call forms: one-hot or soft targets (its
    ``py_sigmoid_focal_loss``) and probabilities instead of logits
    (``activated``, its ``py_focal_loss_with_prob``). As there,
    FL = alpha_t (1 - p_t)^gamma BCE(p, t) with 1 - p_t = t (1 - p) +
    (1 - t) p and alpha_t = alpha t + (1 - alpha) (1 - t): eq. 5 for
    binary t. Not fused: these forms materialise N x K targets anyway.
    """
    t = target.to(pred.dtype)
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    if star:  # eq. 8 for binary t, linear in t in between
        return (t * a_pos * F.softplus(-(gamma * pred + beta)) +
                (1 - t) * a_neg * F.softplus(gamma * pred - beta)) / gamma
    a_t = t * a_pos + (1 - t) * a_neg
    if activated:
        # F.binary_cross_entropy written out (logs floored at -100 as
        # torch does): that function refuses to run under CUDA autocast.
        bce = -(
            t * pred.log().clamp(min=-100) +
            (1 - t) * torch.log1p(-pred).clamp(min=-100))
        one_minus_pt = t * (1 - pred) + (1 - t) * pred
        # pt = 1 exactly (p saturated) would give 0 * inf = NaN gradients
        # for gamma < 1; the floor changes no value above it.
        mod = one_minus_pt.clamp(min=torch.finfo(pred.dtype).tiny).pow(gamma)
        return a_t * mod * bce
    bce = F.binary_cross_entropy_with_logits(pred, t, reduction='none')
    # log(1 - p_t) = log(t sigmoid(-x) + (1 - t) sigmoid(x)) in log space,
    # finite with a finite gradient for any logit.
    log_1m_pt = torch.logaddexp(t.log() + F.logsigmoid(-pred),
                                (1 - t).log() + F.logsigmoid(pred))
    return a_t * torch.exp(gamma * log_1m_pt) * bce


def _check_values(target: Tensor, lo: float, hi: float, what: str) -> None:
    """ValueError unless lo <= target <= hi, without stalling a GPU.

    On the CPU the check is exact and cheap. On other devices reading the
    result back would wait for the device (a host sync per call), so it is
    queued as a device-side assertion instead: bad values stop the run at
    the next synchronisation rather than giving a silently wrong loss.
    """
    if target.numel() == 0 or target.dtype == torch.bool:
        return
    if target.device.type == 'cpu':
        low, high = torch.aminmax(target)
        if low.item() < lo or high.item() > hi:
            raise ValueError(f'{what} must be in [{lo}, {hi}], got '
                             f'[{low.item()}, {high.item()}]')
    else:
        ok = ((target >= lo) & (target <= hi)).all()
        try:
            torch._assert_async(ok, f'{what} must be in [{lo}, {hi}]')
        except (NotImplementedError, RuntimeError, TypeError):
            torch._assert_async(ok)  # a build without the message variant


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
                      chunk_size: Optional[int] = None,
                      activated: bool = False) -> Tensor:
    """Sigmoid focal loss (eq. 5), alpha-balanced CE (eq. 3) or FL* (eq. 8).

    Accepts the call forms of mmdet 3.3's ``FocalLoss``: integer labels
    (the fused path), one-hot / soft (N, K) targets, dense predictions
    (B, K, H, W) with targets of the same shape (elementwise) and, with
    ``activated``, probabilities instead of logits with either kind of
    target (both computed as mmdet does).

    Args:
        pred (Tensor): Logits of shape (N, K) or, with targets of the same
            shape, (B, K, H, W) (probabilities in [0, 1] if
            ``activated``); float32, float16, bfloat16 or float64 (half
            inputs are computed in float32 on the fused path).
        target (Tensor): Integer labels of shape (N,) in [0, K], K being
            background (mmdet convention), or targets of shape (N, K) in
            [0, 1] (one-hot or soft, any dtype).
        weight (Tensor, optional): Per-anchor (N,) or per-element (N, K)
            (or flattened N*K) weights, e.g. 0 for ignored anchors. Treated
            as a constant (no gradient).
        gamma (float): Focusing parameter gamma >= 0; 0 gives CE (eq. 3).
        alpha (float, optional): alpha_t balance, alpha for positives and
            1 - alpha for negatives; None for no balancing (eq. 4).
        star (bool): Use FL* (appendix A, eq. 7-8) instead of FL.
        star_beta (float): beta of FL* (eq. 7).
        reduction (str): 'none' (pred's shape), 'mean' or 'sum', as in
            mmdet.
        avg_factor (float | Tensor, optional): With 'mean', the sum is
            divided by ``avg_factor + eps`` (mmdet's weight_reduce_loss);
            ignored with 'none'; an error with 'sum'. A tensor on the
            device stays there (no host sync).
        loss_weight (float): Multiplier of the loss.
        chunk_size (int, optional): Rows per fused pass; None: about
            160k elements per chunk on CPU, 16M on CUDA.
        activated (bool): ``pred`` holds probabilities (mmdet's
            ``activated=True``); not with ``star`` (FL* needs logits).

    Returns:
        Tensor: Loss of pred's shape and dtype for 'none', else a scalar
        (float32 for half inputs on the fused path, so that sums cannot
        overflow). 'mean' over an empty input is 0 (not NaN).

    Raises:
        ValueError: Bad hyper-parameters, shapes, dtypes or (on the CPU;
            elsewhere a device-side assertion) target values.
    """
    _check_params(gamma, alpha, star, star_beta, reduction)
    if star and activated:
        raise ValueError('FL* (star=True) is defined on logits (eq. 7), '
                         'so activated must be False')
    if pred.dim() > 2 and target.shape == pred.shape:
        return _nd_loss(pred, target, weight, gamma, alpha, star, star_beta,
                        reduction, avg_factor, loss_weight, activated)
    dense = target.dim() == 2
    if pred.dim() != 2 or target.shape not in (pred.shape, pred.shape[:1]):
        raise ValueError('expected pred (N, K) with integer labels (N,) or '
                         f'targets (N, K), got {tuple(pred.shape)} and '
                         f'{tuple(target.shape)}')
    n, k = pred.shape
    if not dense and (target.dtype.is_floating_point
                      or target.dtype == torch.bool):
        raise ValueError('target of shape (N,) must hold integer labels, '
                         f'got {target.dtype}')
    if weight is not None and weight.numel() not in (n, n * k):
        raise ValueError(f'weight must have N={n} or N*K={n * k} elements,'
                         f' got shape {tuple(weight.shape)}')
    if reduction == 'sum' and avg_factor is not None:
        raise ValueError('avg_factor can not be used with reduction="sum"')
    if dense:
        _check_values(target, 0, 1, 'targets (N, K)')
    else:
        _check_values(target, 0, k, f'labels ({k} = background)')
    if activated:
        _check_values(pred.detach(), 0, 1, 'activated pred (probabilities)')
    cdtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    factor = float(loss_weight)
    if reduction == 'mean':
        if avg_factor is None:
            factor /= max(n * k, 1)
        elif isinstance(avg_factor, Tensor) and avg_factor.device.type != \
                'cpu':  # float() would wait for the device
            factor = factor / (avg_factor.to(cdtype) + _EPS)
        else:
            factor /= float(avg_factor) + _EPS
    reduce = reduction != 'none'
    if dense or activated:
        if not dense:  # mmdet one-hot encodes labels for probabilities
            target = labels_to_onehot(target, k)
        loss = _dense_loss(
            pred.to(cdtype), target, gamma, alpha, star, float(star_beta),
            activated)
        loss = _weight_reduce(loss, weight, factor, reduce)
        return loss if reduce else loss.to(pred.dtype)
    params = (gamma, alpha, star, float(star_beta), factor, reduce, chunk_size)
    # Skip the gradient under no_grad or for a constant pred (inference).
    need_grad = pred.requires_grad and torch.is_grad_enabled()
    return _FocalFamilyFunction.apply(pred.contiguous(), target, weight,
                                      params, need_grad)


def _nd_loss(pred: Tensor, target: Tensor, weight: Optional[Tensor],
             gamma: float, alpha: Optional[float], star: bool,
             star_beta: float, reduction: str,
             avg_factor: Optional[Union[float, Tensor]], loss_weight: float,
             activated: bool) -> Tensor:
    """mmdet's dense call form: pred (B, K, H, W) (any shape of more than
    two dimensions) with targets of the same shape, e.g. one-hot maps.

    The loss is elementwise, so it is the (M, 1) case with M = pred.numel();
    'mean' without ``avg_factor`` divides by M, as mmdet does. A weight must
    have pred's shape (mmdet asserts as much for this form).
    """
    if weight is not None and weight.shape != pred.shape:
        raise ValueError('with pred and targets of shape '
                         f'{tuple(pred.shape)}, weight must have that shape,'
                         f' got {tuple(weight.shape)}')
    loss = focal_family_loss(
        pred.reshape(-1, 1),
        target.reshape(-1, 1),
        None if weight is None else weight.reshape(-1, 1),
        gamma=gamma,
        alpha=alpha,
        star=star,
        star_beta=star_beta,
        reduction=reduction,
        avg_factor=avg_factor,
        loss_weight=loss_weight,
        activated=activated)
    return loss.reshape(pred.shape) if reduction == 'none' else loss


def labels_to_onehot(labels: Tensor, num_classes: int) -> Tensor:
    """(N,) labels in [0, K] to an (N, K) 0/1 matrix (K: an all-zero row)."""
    return labels.unsqueeze(1) == torch.arange(
        num_classes, device=labels.device)


def _weight_reduce(loss: Tensor, weight: Optional[Tensor], factor: Scale,
                   reduce: bool) -> Tensor:
    """mmdet's weight reshaping and weight_reduce_loss, ``factor`` holding
    loss_weight / denominator; a sum over nothing is 0, not NaN."""
    if weight is not None:
        n = loss.size(0)
        weight = weight.reshape(n, 1 if weight.numel() == n else -1)
        loss = loss * weight.to(loss.dtype)
    return (loss.sum() if reduce else loss) * factor


@MODELS.register_module()
@check_arguments
class FocalFamilyLoss(nn.Module):
    """FL / alpha-balanced CE / FL* for mmdet heads (e.g. RetinaHead).

    A drop-in for mmdet's ``FocalLoss`` (same arguments and call forms)
    computed by :func:`focal_family_loss`; integer labels take the fused
    path with closed-form gradients (appendix B).

    Args:
        use_sigmoid (bool): Must be True (sigmoid classifier, section 4).
        gamma, alpha, star, star_beta, reduction, loss_weight, chunk_size,
        activated: As in :func:`focal_family_loss`; hyper-parameters are
            checked here (ValueError). Defaults: FL with gamma=2,
            alpha=0.25, on logits.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: Optional[float] = 0.25,
                 star: bool = False,
                 star_beta: float = 0.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 chunk_size: Optional[int] = None,
                 activated: bool = False) -> None:
        super().__init__()
        if use_sigmoid is not True:
            raise ValueError('FocalFamilyLoss only supports the sigmoid '
                             f'form, got use_sigmoid={use_sigmoid!r}')
        _check_params(gamma, alpha, star, star_beta, reduction)
        if chunk_size is not None and not chunk_size >= 1:
            raise ValueError(f'chunk_size must be None or >= 1, got '
                             f'chunk_size={chunk_size!r}')
        if star and activated:
            raise ValueError('FL* (star=True) is defined on logits (eq. 7),'
                             f' got activated={activated!r}')
        self.use_sigmoid = use_sigmoid
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)
        self.star = star
        self.star_beta = float(star_beta)
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.chunk_size = chunk_size
        self.activated = activated

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
            chunk_size=self.chunk_size,
            activated=self.activated)

    def extra_repr(self) -> str:
        """Hyper-parameters shown by ``print(module)``."""
        return (f'gamma={self.gamma}, alpha={self.alpha}, star={self.star}, '
                f'star_beta={self.star_beta}, reduction={self.reduction}, '
                f'activated={self.activated}')
