"""Tests of the fused focal-loss family (paper sec. 3, appendix A and B).

Expected values come from the paper, from ``math`` evaluated per element or
from mmdet's own (autograd) implementation, never from the code under test.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from projects.focal_retina.losses.focal_loss import (FocalFamilyLoss,
                                                     focal_family_loss)

K = 5


def _sample(n=40, k=K, dtype=torch.float64, scale=3.0, seed=0):
    """Logits, labels (~1/3 positives), per-anchor weights with ignores."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, k, generator=g, dtype=dtype) * scale
    labels = torch.randint(0, k + 1, (n, ), generator=g)
    labels[torch.rand(n, generator=g) < 0.5] = k  # background
    weight = torch.rand(n, generator=g, dtype=dtype) + 0.5
    weight[:n // 8] = 0  # ignored anchors
    return pred, labels, weight


def _math_terms(x, label, col, gamma, alpha, star, beta):
    """Loss and d loss / dx of one element by eq. 3-11, with ``math``."""
    y = 1.0 if label == col else -1.0
    xt = y * x  # eq. 6
    a_t = 1.0 if alpha is None else (alpha if y > 0 else 1 - alpha)
    if star:
        ps = 1 / (1 + math.exp(-(gamma * xt + beta)))  # eq. 7
        return -math.log(ps) / gamma * a_t, y * (ps - 1) * a_t  # eq. 8, 11
    pt = 1 / (1 + math.exp(-xt))
    loss = -(1 - pt)**gamma * math.log(pt)  # eq. 4 (eq. 3 if gamma = 0)
    grad = y * (1 - pt)**gamma * (gamma * pt * math.log(pt) + pt - 1)
    return loss * a_t, grad * a_t  # eq. 5, eq. 10 (eq. 9 if gamma = 0)


def _mmdet_loss(pred,
                labels,
                weight,
                gamma,
                alpha,
                reduction,
                avg_factor,
                loss_weight=1.0):
    """mmdet's CPU path: one-hot target, then py_sigmoid_focal_loss."""
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    target = F.one_hot(labels, num_classes=pred.size(1) + 1)[:, :-1]
    return loss_weight * py_sigmoid_focal_loss(
        pred,
        target,
        weight,
        gamma=gamma,
        alpha=alpha,
        reduction=reduction,
        avg_factor=avg_factor)


def test_paper_modulating_factor_points():
    """Sec. 3.2: gamma=2, p_t=0.9 -> 100x, p_t~0.968 -> 1000x below CE."""
    for pt, ratio in [(0.9, 100.0), (1 - 0.001**0.5, 1000.0), (0.5, 4.0)]:
        x = math.log(pt / (1 - pt))
        # One positive (x_t = x) and one negative (x_t = -(-x)) element.
        pred = torch.tensor([[x], [-x]], dtype=torch.float64)
        labels = torch.tensor([0, 1])
        fl = focal_family_loss(pred, labels, alpha=None, reduction='none')
        ce = focal_family_loss(
            pred, labels, gamma=0, alpha=None, reduction='none')
        torch.testing.assert_close(ce / fl, torch.full_like(ce, ratio))
        torch.testing.assert_close(ce, torch.full_like(ce, -math.log(pt)))
    # p_t = 0.968 as printed in the paper: 1 / 0.032^2 = 977, "~1000x".
    pred = torch.tensor([[math.log(0.968 / 0.032)]], dtype=torch.float64)
    labels = torch.zeros(1, dtype=torch.long)
    ce = focal_family_loss(pred, labels, gamma=0, alpha=None)
    fl = focal_family_loss(pred, labels, alpha=None)
    assert (ce / fl).item() == pytest.approx(1 / 0.032**2)


@pytest.mark.parametrize('alpha', [0.25, 0.5, None])
def test_gamma0_is_balanced_ce(alpha):
    """gamma=0 is alpha-balanced CE (eq. 3) = torch's BCE-with-logits."""
    pred, labels, weight = _sample()
    onehot = (labels[:, None] == torch.arange(K)).double()
    a_t = 1.0 if alpha is None else alpha * onehot + (1 - alpha) * (1 - onehot)
    expected = F.binary_cross_entropy_with_logits(
        pred, onehot, reduction='none') * a_t * weight[:, None]
    out = focal_family_loss(
        pred, labels, weight, gamma=0, alpha=alpha, reduction='none')
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('star,gamma,beta,alpha', [(True, 2.0, 1.0, None),
                                                   (True, 4.0, 0.0, None),
                                                   (True, 2.0, 1.0, 0.25),
                                                   (False, 2.0, 0.0, 0.25),
                                                   (False, 0.5, 0.0, None),
                                                   (False, 0.0, 0.0, 0.25),
                                                   (False, 1.0, 0.0, 0.75)])
def test_value_and_grad_match_equations(star, gamma, beta, alpha):
    """Loss (eq. 3-8) and gradient (eq. 9-11) element by element."""
    pred, labels, weight = _sample(n=12, scale=4.0)
    pred.requires_grad_()
    out = focal_family_loss(
        pred,
        labels,
        weight,
        gamma=gamma,
        alpha=alpha,
        star=star,
        star_beta=beta,
        reduction='none')
    (grad, ) = torch.autograd.grad(out.sum(), pred)
    for i in range(pred.size(0)):
        for j in range(K):
            loss, dx = _math_terms(pred[i, j].item(), labels[i].item(), j,
                                   gamma, alpha, star, beta)
            w = weight[i].item()
            assert out[i, j].item() == pytest.approx(
                loss * w, rel=1e-10, abs=1e-14)
            assert grad[i, j].item() == pytest.approx(
                dx * w, rel=1e-9, abs=1e-14)


@pytest.mark.parametrize('gamma,alpha', [(2.0, 0.25), (0.0, 0.25), (0.5, 0.75),
                                         (1.0, 0.5), (3.0, 0.0), (2.0, 1.0)])
@pytest.mark.parametrize('reduction,avg_factor',
                         [('none', None), ('sum', None), ('mean', None),
                          ('mean', 7.0), ('none', 7.0)])
@pytest.mark.parametrize('weight_kind', [None, 'anchor', 'element', 'flat'])
def test_equals_mmdet_py_sigmoid_focal_loss(gamma, alpha, reduction,
                                            avg_factor, weight_kind):
    pred, labels, weight = _sample()
    if weight_kind in ('element', 'flat'):
        weight = torch.rand(pred.shape, dtype=pred.dtype) * weight[:, None]
        if weight_kind == 'flat':
            weight = weight.flatten()
    elif weight_kind is None:
        weight = None
    ours_in = pred.clone().requires_grad_()
    ref_in = pred.clone().requires_grad_()
    ours = focal_family_loss(
        ours_in,
        labels,
        weight,
        gamma=gamma,
        alpha=alpha,
        reduction=reduction,
        avg_factor=avg_factor,
        loss_weight=1.5,
        chunk_size=7)
    ref = _mmdet_loss(
        ref_in,
        labels,
        weight,
        gamma,
        alpha,
        reduction,
        avg_factor,
        loss_weight=1.5)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)
    go = torch.rand_like(ref)
    torch.testing.assert_close(
        torch.autograd.grad(ours, ours_in, go)[0],
        torch.autograd.grad(ref, ref_in, go)[0],
        rtol=1e-6,
        atol=1e-12)


@pytest.mark.parametrize('all_background', [False, True])
def test_equals_mmdet_focal_loss_module(all_background):
    """Through mmdet's FocalLoss module (its CPU path) with an avg_factor
    and ignored anchors, as AnchorHead.loss_by_feat_single calls it."""
    from mmdet.models.losses import FocalLoss
    pred, labels, weight = _sample(n=300, k=20, seed=1)
    if all_background:
        labels.fill_(20)
    cfg = dict(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0)
    ours_in = pred.clone().requires_grad_()
    ref_in = pred.clone().requires_grad_()
    ours = FocalFamilyLoss(**cfg)(ours_in, labels, weight, avg_factor=11.0)
    ref = FocalLoss(**cfg)(ref_in, labels, weight, avg_factor=11.0)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(
        ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-15)
    for red in ('none', 'sum'):
        torch.testing.assert_close(
            FocalFamilyLoss(
                **cfg)(pred, labels, weight, reduction_override=red),
            FocalLoss(**cfg)(pred, labels, weight, reduction_override=red),
            rtol=1e-6,
            atol=1e-15)


@pytest.mark.parametrize('star,gamma,beta,alpha', [(False, 2.0, 0.0, 0.25),
                                                   (False, 0.0, 0.0, 0.25),
                                                   (False, 0.5, 0.0, None),
                                                   (False, 3.0, 0.0, 0.9),
                                                   (True, 2.0, 1.0, None),
                                                   (True, 4.0, 0.0, 0.25)])
@pytest.mark.parametrize('reduction,avg_factor',
                         [('none', None), ('mean', 3.0), ('mean', None),
                          ('sum', None)])
def test_gradcheck(star, gamma, beta, alpha, reduction, avg_factor):
    pred, labels, weight = _sample(n=9, k=3, scale=2.0)
    pred.requires_grad_()

    def fn(x):
        return focal_family_loss(
            x,
            labels,
            weight,
            gamma=gamma,
            alpha=alpha,
            star=star,
            star_beta=beta,
            reduction=reduction,
            avg_factor=avg_factor,
            chunk_size=4)

    assert torch.autograd.gradcheck(fn, (pred, ))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('star,gamma', [(False, 2.0), (False, 0.0),
                                        (False, 0.5), (True, 2.0)])
def test_extreme_logits_are_finite_and_right(dtype, star, gamma):
    big = [100.0, -100.0, 1e4, -1e4]
    pred = torch.tensor([big, big], dtype=dtype).repeat(1, 2)
    labels = torch.tensor([0, 8])  # row 0: column 0 positive
    pred.requires_grad_()
    out = focal_family_loss(
        pred,
        labels,
        gamma=gamma,
        alpha=None,
        star=star,
        star_beta=1.0,
        reduction='none')
    (grad, ) = torch.autograd.grad(out.sum(), pred)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    # Badly wrong elements: loss ~ |x| (|x| - beta / gamma for FL*) and
    # slope -y; confident right ones: ~0 loss and slope.
    x = pred.detach().double()
    y = -torch.ones_like(x)
    y[0, 0] = 1
    wrong = (y * x) < 0
    slope = torch.where(wrong, -y, torch.zeros_like(y))
    expected = torch.where(wrong, x.abs(), torch.zeros_like(x))
    if star:  # the beta shift: softplus(|x| gamma - beta) / gamma
        expected = torch.where(wrong, expected - 1.0 / gamma, expected)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), slope, rtol=1e-6, atol=1e-6)


def _float64_reference(logits, labels, weight, avg_factor):
    """mmdet's loss and logit gradient in float64 on the (rounded) logits:
    what a float32 computation matches to ~1e-7 and one in half precision
    misses by ~1e-4 (fp16) to ~1e-3 (bf16)."""
    x = logits.detach().double().requires_grad_()
    ref = _mmdet_loss(x, labels, weight.double(), 2.0, 0.25, 'mean',
                      avg_factor)
    ref.backward()
    return ref.detach(), x.grad


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs_close_to_float32(dtype):
    """Half logits are computed in float32: the loss equals the float64
    reference on the same rounded values to float32 precision; the
    gradient, stored in the input's dtype, to that dtype's rounding."""
    pred, labels, weight = _sample(n=500, k=20, dtype=torch.float32)
    half = pred.to(dtype).requires_grad_()
    out = focal_family_loss(half, labels, weight, avg_factor=30.0)
    ref, ref_grad = _float64_reference(half, labels, weight, 30.0)
    assert out.dtype == torch.float32  # reduced in float32
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=0)
    out.backward()
    assert half.grad.dtype == dtype
    tol = 8e-3 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(
        half.grad.double(),
        ref_grad,
        rtol=tol,
        atol=tol * ref_grad.abs().max().item())
    none = focal_family_loss(half, labels, weight, reduction='none')
    assert none.dtype == dtype and none.shape == pred.shape
    ref_none = _mmdet_loss(half.detach().double(), labels, weight.double(),
                           2.0, 0.25, 'none', None)
    torch.testing.assert_close(none.double(), ref_none, rtol=tol, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_under_cpu_autocast_with_half_logits(dtype):
    """As under the CPU --amp: the head's conv yields half logits inside
    autocast; the loss is float32 and equals the float64 reference on the
    same (rounded) logits to float32 precision, and the gradient reaches
    the conv in its dtype."""
    pred, labels, weight = _sample(n=500, k=20, dtype=torch.float32)
    conv = torch.nn.Conv2d(8, 20, 1)
    feats = torch.randn(500, 8, 1, 1)
    with torch.autocast('cpu', dtype=dtype):
        logits = conv(feats).flatten(1)
        assert logits.dtype == dtype  # really half logits
        logits.retain_grad()
        loss = focal_family_loss(logits, labels, weight, avg_factor=30.0)
    assert loss.dtype == torch.float32
    ref, ref_grad = _float64_reference(logits, labels, weight, 30.0)
    torch.testing.assert_close(loss.double(), ref, rtol=2e-6, atol=0)
    loss.backward()
    assert logits.grad.dtype == dtype
    tol = 8e-3 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(
        logits.grad.double(),
        ref_grad,
        rtol=tol,
        atol=tol * ref_grad.abs().max().item())
    assert conv.weight.grad is not None
    assert torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
def test_empty_input(reduction):
    pred = torch.zeros(0, K, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long)
    out = focal_family_loss(pred, labels, torch.zeros(0), reduction=reduction)
    if reduction == 'none':
        assert out.shape == (0, K)
        out = out.sum()
    assert out.item() == 0
    out.backward()
    assert pred.grad.shape == (0, K)
    assert focal_family_loss(pred, labels, avg_factor=0.0).item() == 0


def test_chunking_retain_graph_and_grad_output():
    """Chunk size does not change anything; a second backward through a
    retained graph (gradient recomputed) and grad_output scaling work."""
    pred, labels, weight = _sample(n=101, k=7)
    results = []
    for chunk in (1, 13, 1000, None):
        x = pred.clone().requires_grad_()
        loss = focal_family_loss(
            x, labels, weight, avg_factor=5.0, chunk_size=chunk)
        (loss * 3).backward(retain_graph=True)
        first = x.grad.clone()
        loss.backward()
        torch.testing.assert_close(x.grad, first * 4 / 3)
        results.append((loss.detach(), first))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-14, atol=0)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-14, atol=0)


def test_no_grad_and_non_contiguous():
    """Column-major logits under no_grad (no gradient buffer): mmdet's
    values, and exactly those of the contiguous input with a gradient."""
    pred, labels, weight = _sample(n=30)
    expected = _mmdet_loss(pred, labels, weight, 2.0, 0.25, 'none', None)
    x = pred.t().contiguous().t().requires_grad_()  # column-major
    assert not x.is_contiguous()
    with torch.no_grad():
        out = focal_family_loss(x, labels, weight, reduction='none')
    assert not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-15)
    with_grad = focal_family_loss(
        pred.clone().requires_grad_(), labels, weight, reduction='none')
    torch.testing.assert_close(out, with_grad.detach(), rtol=0, atol=0)


@pytest.mark.parametrize('kwargs', [
    dict(gamma=-1.0),
    dict(gamma=float('nan')),
    dict(alpha=1.5),
    dict(alpha=-0.1),
    dict(star=True, gamma=0.0),
    dict(reduction='avg'),
    dict(use_sigmoid=False),
    dict(chunk_size=0),
    dict(star=True, activated=True)
])
def test_invalid_hyper_parameters(kwargs):
    name = next(iter(kwargs))
    if name == 'star':
        name = 'gamma' if 'gamma' in kwargs else 'activated'
    with pytest.raises(ValueError, match=name):
        FocalFamilyLoss(**kwargs)


def test_invalid_inputs():
    pred, labels, _ = _sample(n=6)
    with pytest.raises(ValueError, match=r'labels .* must be in \[0, 5\]'):
        focal_family_loss(pred, labels + K + 1)
    with pytest.raises(ValueError, match=r'labels .* must be in \[0, 5\]'):
        focal_family_loss(pred, labels - K - 1)
    with pytest.raises(ValueError, match='integer labels'):
        focal_family_loss(pred, labels.double())
    with pytest.raises(ValueError, match=r'targets \(N, K\) must be in'):
        focal_family_loss(pred, torch.full_like(pred, 1.5))
    with pytest.raises(ValueError, match='expected pred'):
        focal_family_loss(pred, torch.zeros(6, K + 1))
    with pytest.raises(ValueError, match='probabilities'):
        focal_family_loss(pred, labels, activated=True)  # logits given
    with pytest.raises(ValueError, match='activated'):
        focal_family_loss(pred.sigmoid(), labels, star=True, activated=True)
    with pytest.raises(ValueError, match='avg_factor'):
        focal_family_loss(pred, labels, reduction='sum', avg_factor=2.0)
    with pytest.raises(ValueError, match='weight'):
        focal_family_loss(pred, labels, torch.ones(5))


def test_registered_and_buildable():
    from mmdet.registry import MODELS
    loss = MODELS.build(dict(type='FocalFamilyLoss'))
    assert isinstance(loss, FocalFamilyLoss) and loss.use_sigmoid
    assert (loss.gamma, loss.alpha, loss.star) == (2.0, 0.25, False)
    star = MODELS.build(
        dict(type='FocalFamilyLoss', star=True, gamma=4.0, alpha=None))
    assert star.star and star.alpha is None
    assert 'star=True' in repr(star)
    # mmdet FocalLoss's arguments, activated included, are accepted
    act = MODELS.build(
        dict(
            type='FocalFamilyLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            reduction='mean',
            loss_weight=1.0,
            activated=True))
    assert act.activated and 'activated=True' in repr(act)


# mmdet FocalLoss's other call forms ------------------------------------


@pytest.mark.parametrize('star,gamma,alpha', [(False, 2.0, 0.25),
                                              (False, 0.5, None),
                                              (False, 0.0, 0.75),
                                              (True, 2.0, 0.25)])
@pytest.mark.parametrize('dtype', [torch.long, torch.bool, torch.float64])
def test_onehot_targets_equal_integer_labels(star, gamma, alpha, dtype):
    """(N, K) one-hot targets (background: an all-zero row) give the
    integer-label loss and gradient: eq. 5 / eq. 8 per element."""
    pred, labels, weight = _sample()
    onehot = (labels[:, None] == torch.arange(K)).to(dtype)
    kwargs = dict(gamma=gamma, alpha=alpha, star=star, star_beta=1.0)
    for red, avg in [('none', None), ('mean', 9.0), ('sum', None)]:
        a = pred.clone().requires_grad_()
        b = pred.clone().requires_grad_()
        ours = focal_family_loss(
            a, onehot, weight, reduction=red, avg_factor=avg, **kwargs)
        ref = focal_family_loss(
            b, labels, weight, reduction=red, avg_factor=avg, **kwargs)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
        go = torch.rand_like(ref)
        torch.testing.assert_close(
            torch.autograd.grad(ours, a, go)[0],
            torch.autograd.grad(ref, b, go)[0],
            rtol=1e-9,
            atol=1e-14)


@pytest.mark.parametrize('gamma,alpha', [(2.0, 0.25), (0.5, 0.75), (0.0, 0.5)])
@pytest.mark.parametrize('weight_kind', [None, 'anchor', 'element'])
def test_soft_targets_equal_mmdet(gamma, alpha, weight_kind):
    """Soft (N, K) targets: mmdet's FocalLoss takes them through
    py_sigmoid_focal_loss (pred.dim() == target.dim())."""
    from mmdet.models.losses import FocalLoss
    pred, _, weight = _sample(n=60)
    soft = torch.rand(
        pred.shape,
        dtype=pred.dtype,
        generator=torch.Generator().manual_seed(5))
    soft[::3] = soft[::3].round()  # some rows exactly 0 / 1
    if weight_kind == 'element':
        weight = torch.rand(pred.shape, dtype=pred.dtype) * weight[:, None]
    elif weight_kind is None:
        weight = None
    cfg = dict(use_sigmoid=True, gamma=gamma, alpha=alpha, loss_weight=1.5)
    a = pred.clone().requires_grad_()
    b = pred.clone().requires_grad_()
    ours = FocalFamilyLoss(**cfg)(a, soft, weight, avg_factor=7.0)
    ref = FocalLoss(**cfg)(b, soft, weight, avg_factor=7.0)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-15)
    none = FocalFamilyLoss(**cfg)(
        pred, soft, weight, reduction_override='none')
    torch.testing.assert_close(
        none,
        FocalLoss(**cfg)(pred, soft, weight, reduction_override='none'),
        rtol=1e-9,
        atol=1e-15)


@pytest.mark.parametrize('gamma,alpha', [(2.0, 0.25), (1.0, 0.5)])
def test_activated_equals_mmdet(gamma, alpha):
    """activated=True: pred holds probabilities, as mmdet's FocalLoss
    (sigmoid_focal_loss_with_prob); the same loss as on the logits."""
    from mmdet.models.losses import FocalLoss
    logits, labels, weight = _sample(n=80)
    probs = logits.sigmoid()
    cfg = dict(use_sigmoid=True, gamma=gamma, alpha=alpha, activated=True)
    a = probs.clone().requires_grad_()
    b = probs.clone().requires_grad_()
    ours = FocalFamilyLoss(**cfg)(a, labels, weight, avg_factor=5.0)
    ref = FocalLoss(**cfg)(b, labels, weight, avg_factor=5.0)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-15)
    on_logits = focal_family_loss(
        logits, labels, weight, gamma=gamma, alpha=alpha, avg_factor=5.0)
    torch.testing.assert_close(ours, on_logits, rtol=1e-9, atol=0)
    onehot = (labels[:, None] == torch.arange(K)).double()
    torch.testing.assert_close(
        FocalFamilyLoss(**cfg)(probs, onehot, weight, avg_factor=5.0), ours)
    soft = torch.rand(probs.shape, dtype=probs.dtype)  # (N, K) soft targets
    torch.testing.assert_close(
        FocalFamilyLoss(**cfg)(probs, soft, weight, reduction_override='sum'),
        FocalLoss(**cfg)(probs, soft, weight, reduction_override='sum'),
        rtol=1e-9,
        atol=0)


def test_dense_targets_extreme_logits_are_finite():
    """The (N, K) path works in log space: no NaN gradient for saturated
    logits, even with gamma < 1 (where (1 - p_t)^gamma has an infinite
    slope at 0)."""
    big = torch.tensor([[100.0, -100.0, 1e4, -1e4]]).repeat(2, 1)
    target = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.5, 0.0]])
    for gamma in (2.0, 0.5, 0.0):
        x = big.clone().requires_grad_()
        loss = focal_family_loss(
            x, target, gamma=gamma, alpha=None, reduction='sum')
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        # the confident right elements (row 0, cols 0, 2) cost nothing
        assert x.grad[0, 0] == 0 and x.grad[0, 2] == 0
        # By hand, BCE(x, t) = max(x, 0) - x t + log(1 + e^-|x|) and
        # 1 - p_t = t (1 - p) + (1 - t) p: the wrong elements (0, 3),
        # (1, 0), (1, 1) cost |x| (1 - p_t = 1) with slope p - t = -+1;
        # (1, 2) (x = 1e4, t = 0.5) costs 5e3 * 0.5^gamma with slope
        # (p - t) 0.5^gamma (1 - p_t = 0.5 whatever x); the others ~0.
        half = 0.5**gamma
        assert loss.item() == pytest.approx(1e4 + 200 + 5e3 * half, rel=1e-6)
        torch.testing.assert_close(
            x.grad,
            torch.tensor([[0., 0., 0., -1.], [1., -1., 0.5 * half, 0.]]),
            rtol=1e-6,
            atol=1e-6)


# CUDA ------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')


@needs_cuda
@pytest.mark.parametrize('reduction,avg_factor',
                         [('mean', 'tensor'), ('mean', 7.0), ('none', None),
                          ('sum', None)])
@pytest.mark.parametrize('target_kind', ['labels', 'onehot'])
def test_cuda_has_no_host_sync(reduction, avg_factor, target_kind):
    """Forward and backward never wait for the GPU: a sync raises here."""
    pred, labels, weight = _sample(n=3000, k=20, dtype=torch.float32)
    pred = pred.cuda().requires_grad_()
    labels, weight = labels.cuda(), weight.cuda()
    target = labels
    if target_kind == 'onehot':
        target = (labels[:, None] == torch.arange(20, device='cuda'))
    if avg_factor == 'tensor':  # e.g. a number of positives on the GPU
        avg_factor = (labels < 20).sum().float()
    loss_fn = FocalFamilyLoss(reduction=reduction, chunk_size=512)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        loss = loss_fn(pred, target, weight, avg_factor=avg_factor)
        loss.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert torch.isfinite(pred.grad).all()


@needs_cuda
@pytest.mark.parametrize('star,gamma,alpha', [(False, 2.0, 0.25),
                                              (False, 0.0, 0.75),
                                              (True, 2.0, 0.25)])
def test_cuda_equals_cpu(star, gamma, alpha):
    pred, labels, weight = _sample(n=3000, k=20, dtype=torch.float32)
    results = []
    for device in ('cpu', 'cuda'):
        x = pred.to(device).requires_grad_()
        loss = focal_family_loss(
            x,
            labels.to(device),
            weight.to(device),
            gamma=gamma,
            alpha=alpha,
            star=star,
            star_beta=1.0,
            avg_factor=11.0)
        loss.backward()
        results.append((loss.detach().cpu(), x.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(
        results[1][1], results[0][1], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize('activated', [False, True])
def test_dense_nchw_form_equals_mmdet(activated):
    """mmdet's FocalLoss API test calls it with pred (B, K, H, W) and
    one-hot targets of the same shape; elementwise, equal to mmdet's
    FocalLoss to 1e-5 in value and gradient, for each reduction."""
    from mmdet.models.losses import FocalLoss
    g = torch.Generator().manual_seed(1)
    b, k, h, w = 3, 5, 40, 40  # mmdet's test shape
    pred = torch.rand((b, k, h, w), generator=g)
    if not activated:
        pred = (pred - 0.5) * 8  # logits
    target = F.one_hot(
        torch.randint(0, k, (b * h * w, ), generator=g),
        k).reshape(b, h, w, k).permute(0, 3, 1, 2)
    cfg = dict(use_sigmoid=True, activated=activated)
    for kwargs in (dict(), dict(avg_factor=10.0),
                   dict(reduction_override='sum'),
                   dict(reduction_override='none'),
                   dict(weight=torch.rand((b, k, h, w), generator=g))):
        a = pred.clone().requires_grad_()
        r = pred.clone().requires_grad_()
        ours = FocalFamilyLoss(**cfg)(a, target, **kwargs)
        ref = FocalLoss(**cfg)(r, target, **kwargs)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
        ours.sum().backward()
        ref.sum().backward()
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match='weight must have that shape'):
        FocalFamilyLoss(**cfg)(pred, target, weight=torch.ones(b))
