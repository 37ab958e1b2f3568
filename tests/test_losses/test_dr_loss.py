"""Tests of the DR loss (Qian et al. 2020; public code idstcv/DR_loss).

Expected values come from ``_np_dr``, a float64 NumPy implementation
written here from the formula (explicit lists of negative and positive
scores), never from the code under test.
"""
import math

import numpy as np
import pytest
import torch

from projects.focal_retina.losses.dr_loss import DRLoss, dr_loss

K = 3
NEG_LAMBDA = 0.1 / math.log(3.5)
# Two images of 6 anchors, 3 classes, image-major rows.
# Image 0: anchors 0, 1 positive (classes 0, 2), 2, 4, 5 background,
#          3 ignored (a positive label, but weight 0).
# Image 1: no positive; anchor 9 ignored.
TOY_LOGITS = [
    [1.5, -0.5, 2.0],  # 0: positive, class 0 (wrong class 2 is high)
    [-2.0, 0.3, 0.8],  # 1: positive, class 2
    [0.4, -1.0, -3.0],  # 2: background
    [5.0, 6.0, 7.0],  # 3: ignored (must not count anywhere)
    [-0.7, 1.1, -1.5],  # 4: background
    [-4.0, -2.5, 0.0],  # 5: background
    [0.9, -0.2, -1.3],  # 6: image 1, background
    [-1.8, 2.2, 0.1],  # 7
    [-0.4, -0.6, -0.9],  # 8
    [9.0, 9.0, 9.0],  # 9: ignored
    [0.2, -3.3, 1.7],  # 10
    [-1.1, 0.5, -2.4],  # 11
]
TOY_LABELS = [0, 2, K, 1, K, K, K, K, K, K, K, K]
TOY_WEIGHTS = [1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1]
PAPER = dict(margin=0.5, pos_lambda=1.0, neg_lambda=NEG_LAMBDA, L=6.0, tau=4.0)


def _np_dr(logits,
           labels,
           weights,
           groups,
           margin=0.5,
           pos_lambda=1.0,
           neg_lambda=NEG_LAMBDA,
           L=6.0,
           tau=4.0,
           wrong_classes=True):
    """Per-group DR losses from the formula, float64 NumPy.

    ``wrong_classes=False`` leaves the other classes of positive anchors
    out of the negatives (the mistake the public code does not make).
    """
    logits = np.asarray(logits, dtype=np.float64)
    out = []
    for start, end in groups:
        neg, pos = [], []
        for i in range(start, end):
            if weights[i] == 0:
                continue
            for c in range(logits.shape[1]):
                p = 1.0 / (1.0 + np.exp(-logits[i, c]))
                if labels[i] == c:
                    pos.append(p)
                elif wrong_classes or labels[i] == logits.shape[1]:
                    neg.append(p)
        neg, pos = np.array(neg), np.array(pos)
        d_neg = 0.0
        if len(neg):
            z = neg / neg_lambda
            q = np.exp(z - z.max())
            d_neg = float((q / q.sum() * neg).sum())
        d_pos = 1.0
        if len(pos):
            z = -pos / pos_lambda
            q = np.exp(z - z.max())
            d_pos = float((q / q.sum() * pos).sum())
        out.append(tau / L * np.log1p(np.exp(L * (d_neg - d_pos + margin))))
    return np.array(out)


def _toy(dtype=torch.float64):
    return (torch.tensor(TOY_LOGITS, dtype=dtype), torch.tensor(TOY_LABELS),
            torch.tensor(TOY_WEIGHTS, dtype=torch.float32))


def _random(n=60, k=5, num_images=3, dtype=torch.float64, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, k, generator=g, dtype=dtype) * scale
    labels = torch.randint(0, k, (n, ), generator=g)
    labels[torch.rand(n, generator=g) < 0.7] = k
    labels[n - n // num_images:] = k  # last image without positives
    weight = (torch.rand(n, generator=g) > 0.15).float()
    return pred, labels, weight


GROUPS = dict(per_batch=[(0, 12)], per_image=[(0, 6), (6, 12)])


@pytest.mark.parametrize('grouping', ['per_batch', 'per_image'])
@pytest.mark.parametrize('chunk_size', [None, 1, 4, 5])
def test_toy_values(grouping, chunk_size):
    pred, labels, weight = _toy()
    expected = _np_dr(TOY_LOGITS, TOY_LABELS, TOY_WEIGHTS, GROUPS[grouping])
    kw = dict(grouping=grouping, num_images=2, chunk_size=chunk_size)
    none = dr_loss(pred, labels, weight, reduction='none', **kw)
    np.testing.assert_allclose(none.numpy(), expected, rtol=1e-12)
    mean = dr_loss(pred, labels, weight, **kw)
    assert mean.item() == pytest.approx(expected.mean(), rel=1e-12)
    total = dr_loss(pred, labels, weight, reduction='sum', **kw)
    assert total.item() == pytest.approx(expected.sum(), rel=1e-12)
    # float32 logits: float32 result close to the float64 reference
    loss32 = dr_loss(pred.float(), labels, weight, **kw)
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(expected.mean(), rel=1e-5)


def test_toy_groupings_differ_and_image_without_positives():
    pred, labels, weight = _toy()
    per_image = dr_loss(
        pred,
        labels,
        weight,
        grouping='per_image',
        num_images=2,
        reduction='none')
    per_batch = dr_loss(pred, labels, weight)
    assert per_batch.item() != pytest.approx(per_image.mean().item())
    # Image 1 has no positive: D+ = 1, so its loss is
    # (tau/L) softplus(L (D- - 1 + m)) with D- of its 14 negatives.
    p = 1 / (1 + np.exp(-np.array(TOY_LOGITS[6:9] + TOY_LOGITS[10:])))
    q = np.exp(p / NEG_LAMBDA)
    d_neg = (q * p).sum() / q.sum()
    expected = 4 / 6 * np.log1p(np.exp(6 * (d_neg - 1 + 0.5)))
    assert per_image[1].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('grouping', ['per_batch', 'per_image'])
def test_all_negative_batch_has_d_plus_one(grouping):
    pred, _, weight = _toy()
    labels = torch.full((12, ), K)
    loss = dr_loss(
        pred,
        labels,
        weight,
        grouping=grouping,
        num_images=2,
        reduction='none')
    keep = [i for i in range(12) if TOY_WEIGHTS[i]]
    for value, (start, end) in zip(loss.tolist(), GROUPS[grouping]):
        p = 1 / (1 + np.exp(-np.array(TOY_LOGITS)
                            [[i for i in keep if start <= i < end]].ravel()))
        q = np.exp(p / NEG_LAMBDA)
        d_neg = (q * p).sum() / q.sum()
        expected = 4 / 6 * np.log1p(np.exp(6 * (d_neg - 1.0 + 0.5)))
        assert value == pytest.approx(expected, rel=1e-12)


def test_wrong_classes_at_positive_anchors_are_negatives():
    """A positive anchor scoring high on another class is the hardest
    negative: leaving it out would change the loss and drop its push."""
    logits = [[2.0, 8.0], [-6.0, -6.0], [-5.0, -7.0], [-6.5, -5.5]]
    labels, weights = [0, 2, 2, 2], [1, 1, 1, 1]
    with_wrong = _np_dr(logits, labels, weights, [(0, 4)])[0]
    without = _np_dr(logits, labels, weights, [(0, 4)], wrong_classes=False)
    assert with_wrong - without[0] > 1.0  # the case separates the two
    pred = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = dr_loss(pred, torch.tensor(labels), torch.ones(4))
    assert loss.item() == pytest.approx(with_wrong, rel=1e-12)
    loss.backward()
    # raising the wrong class's score raises the loss (it is ranked above
    # the negatives), and it carries most of the negatives' gradient
    assert pred.grad[0, 1] > 0
    assert pred.grad[0, 1] > 10 * pred.grad[1:].abs().max()


@pytest.mark.parametrize('grouping', ['per_batch', 'per_image'])
@pytest.mark.parametrize('chunk_size', [None, 7])
def test_gradcheck(grouping, chunk_size):
    pred, labels, weight = _random(n=30, k=4)
    pred.requires_grad_()

    def fn(x):
        return dr_loss(
            x,
            labels,
            weight,
            grouping=grouping,
            num_images=3,
            reduction='none',
            chunk_size=chunk_size)

    assert torch.autograd.gradcheck(fn, (pred, ))
    # lambda- = 1e-3 < 1/700: the exact-maximum shift (float64)
    assert torch.autograd.gradcheck(
        lambda x: dr_loss(
            x / 30,
            labels,
            weight,
            neg_lambda=1e-3,
            grouping=grouping,
            num_images=3,
            chunk_size=chunk_size), (pred, ))
    toy = _toy()[0].requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: dr_loss(x, *_toy()[1:], grouping=grouping, num_images=2),
        (toy, ))


def test_gradient_of_ignored_anchors_is_zero():
    pred, labels, weight = _toy()
    pred.requires_grad_()
    dr_loss(pred, labels, weight).backward()
    assert pred.grad[3].abs().sum() == 0 and pred.grad[9].abs().sum() == 0
    assert (pred.grad[[0, 1, 2, 4, 5, 6, 7, 8, 10, 11]] != 0).all()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('grouping', ['per_batch', 'per_image'])
def test_extreme_logits_are_finite(dtype, grouping):
    pred, labels, weight = _random(n=60, k=5, dtype=dtype, seed=1)
    pred = (torch.sign(pred) * 100).requires_grad_()  # logits of +-100
    loss = dr_loss(pred, labels, weight, grouping=grouping, num_images=3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    # p in {0, 1}: a limit the formula gives in closed form
    p = (pred.detach() > 0).double().numpy()
    expected = _np_dr(
        np.where(p > 0, 40.0, -40.0), labels.tolist(),
        weight.tolist(), [(0, 60)] if grouping == 'per_batch' else [(0, 20),
                                                                    (20, 40),
                                                                    (40, 60)])
    assert loss.item() == pytest.approx(expected.mean(), rel=1e-6)


def test_tiny_neg_lambda_is_stable():
    """exp(p / lambda) overflows float32 for lambda < 1/88; the
    max-shifted form must not."""
    pred, labels, weight = _random(n=40, k=4, dtype=torch.float32, seed=2)
    groups = [(0, 40)]
    # all p <= 0.5: exp((p - 1) / lambda) would underflow for every
    # negative, so the shift must be the negatives' own maximum
    low = -pred.abs() - 0.5
    for x, lam in ((pred, 1e-3), (pred, 1e-5), (low, 1e-3), (low, 1e-5)):
        x = x.clone().requires_grad_()
        loss = dr_loss(x, labels, weight, neg_lambda=lam, chunk_size=3)
        expected = _np_dr(
            x.detach().double().numpy(),
            labels.tolist(),
            weight.tolist(),
            groups,
            neg_lambda=lam)
        assert loss.item() == pytest.approx(expected[0], rel=1e-5)
        loss.backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_inputs_and_cpu_autocast(dtype):
    """Half inputs are computed in float32: the loss equals the float64
    formula on the same (half) values to float32 precision, which a
    computation in half precision misses by ~1e-3 (fp16) to ~1e-2 (bf16)."""
    pred, labels, weight = _random(n=200, k=6, dtype=torch.float32)
    half = pred.to(dtype)
    exact = half.double().numpy()
    lab, w = labels.tolist(), weight.tolist()
    per_batch = _np_dr(exact, lab, w, [(0, 200)])[0]
    per_image = _np_dr(exact, lab, w, [(0, 100), (100, 200)]).mean()
    x = half.clone().requires_grad_()
    loss = dr_loss(x, labels, weight, grouping='per_image', num_images=2)
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == dtype
    assert loss.item() == pytest.approx(per_image, rel=2e-6)
    # The gradient, stored in the input's dtype, against float64's.
    x64 = half.double().requires_grad_()
    dr_loss(x64, labels, weight, grouping='per_image',
            num_images=2).backward()
    tol = 8e-3 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(
        x.grad.double(), x64.grad, rtol=tol, atol=tol * x64.grad.abs().max())
    assert dr_loss(half, labels, weight).item() == pytest.approx(
        per_batch, rel=2e-6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = (half.float() * 1.0).requires_grad_()
        in_amp = dr_loss(y.to(dtype), labels, weight)
    assert in_amp.dtype == torch.float32
    assert in_amp.item() == pytest.approx(per_batch, rel=2e-6)
    extreme = torch.full((8, 6), 100.0, dtype=dtype).requires_grad_()
    value = dr_loss(extreme, torch.full((8, ), 6), None)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(extreme.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_cuda_matches_cpu(dtype):
    pred, labels, weight = _random(n=300, k=8, dtype=torch.float32)
    cpu = pred.to(dtype).float().requires_grad_()
    gpu = pred.to(device='cuda', dtype=dtype).requires_grad_()
    with torch.autocast('cuda', dtype=torch.float16):
        loss = dr_loss(gpu, labels.cuda(), weight.cuda(), chunk_size=50)
    loss.backward()
    ref = dr_loss(cpu, labels, weight)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(
        gpu.grad.float().cpu(), cpu.grad, rtol=1e-2, atol=1e-5)


def test_per_image_mean_is_split_invariant():
    """per_image averages one loss per image, so 1 process x 3 images
    equals the average of 3 processes x 1 image (what DDP computes)."""
    pred, labels, weight = _random(n=60, k=5)
    whole = pred.clone().requires_grad_()
    dr_loss(
        whole, labels, weight, grouping='per_image', num_images=3).backward()
    parts = []
    for i in range(3):
        x = pred[20 * i:20 * (i + 1)].clone().requires_grad_()
        dr_loss(x, labels[20 * i:20 * (i + 1)],
                weight[20 * i:20 * (i + 1)]).backward()
        parts.append(x.grad / 3)  # DDP averages over 3 processes
    torch.testing.assert_close(whole.grad, torch.cat(parts))


def test_avg_factor_is_ignored_and_weight_none_means_all():
    pred, labels, _ = _toy()
    loss = DRLoss()
    base = loss(pred, labels)
    assert loss(pred, labels, torch.ones(12), avg_factor=7.0) == base
    assert loss(pred, labels, avg_factor=torch.tensor(3.0)) == base


def test_empty_input():
    pred = torch.zeros(0, K, requires_grad=True)
    loss = dr_loss(pred, torch.zeros(0, dtype=torch.long), None)
    loss.backward()
    # D- = 0 (no negative), D+ = 1: (tau/L) softplus(L (m - 1))
    assert loss.item() == pytest.approx(4 / 6 * math.log1p(math.exp(-3)))
    assert pred.grad.shape == (0, K)


def test_retain_graph_and_grad_output():
    pred, labels, weight = _toy()
    pred.requires_grad_()
    loss = dr_loss(pred, labels, weight, grouping='per_image', num_images=2)
    loss.backward(retain_graph=True)
    first = pred.grad.clone()
    pred.grad = None
    (3 * loss).backward()
    torch.testing.assert_close(pred.grad, 3 * first)
    # the gradient equals a central finite difference
    eps = 1e-5
    values = []
    for step in (eps, -eps):
        x = pred.detach().clone()
        x[7, 1] += step
        values.append(
            dr_loss(x, labels, weight, grouping='per_image',
                    num_images=2).item())
    assert (values[0] - values[1]) / (2 * eps) == pytest.approx(
        first[7, 1].item(), rel=1e-6)


def test_peak_memory_is_one_gradient_buffer():
    """No one-hot, mask or activation of N x K: forward + backward
    allocate little more than the N x K float32 gradient."""
    from torch.profiler import ProfilerActivity, profile
    n, k = 60000, 80
    pred, labels, weight = _random(n=n, k=k, dtype=torch.float32, num_images=2)
    pred.requires_grad_()
    loss_fn = DRLoss(grouping='per_image')
    loss_fn(pred, labels, weight, num_images=2).backward()
    pred.grad = None
    with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss_fn(pred, labels, weight, num_images=2).backward()
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    grad_bytes = n * k * 4
    assert grad_bytes <= peak < 1.25 * grad_bytes


@pytest.mark.parametrize('kwargs', [
    dict(margin=-0.1),
    dict(margin=float('nan')),
    dict(pos_lambda=0),
    dict(neg_lambda=-1.0),
    dict(neg_lambda=float('inf')),
    dict(L=0),
    dict(tau=0),
    dict(tau='4'),
    dict(grouping='per_gpu'),
    dict(reduction='avg'),
    dict(use_sigmoid=False),
    dict(chunk_size=0),
    dict(loss_weight=-1.0),
    dict(L=True)
])
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DRLoss(**kwargs)


def test_invalid_inputs():
    pred, labels, weight = _toy()
    with pytest.raises(ValueError, match='num_images'):
        DRLoss(grouping='per_image')(pred, labels, weight)
    with pytest.raises(ValueError, match='num_images'):
        DRLoss(grouping='per_image')(pred, labels, weight, num_images=5)
    with pytest.raises(ValueError, match='labels must be in'):
        dr_loss(pred, labels + 5, weight)
    with pytest.raises(ValueError, match='integer labels'):
        dr_loss(pred, labels.float(), weight)
    with pytest.raises(ValueError, match='weight'):
        dr_loss(pred, labels, torch.ones(5))
    with pytest.raises(ValueError, match='0 \\(ignored\\) or 1'):
        dr_loss(pred, labels, torch.full((12, ), 0.5))
    with pytest.raises(ValueError, match='expected pred'):
        dr_loss(pred[:, 0], labels, weight)


def test_registered_and_head_contract():
    from mmdet.registry import MODELS
    loss = MODELS.build(dict(type='DRLoss', **PAPER))
    assert isinstance(loss, DRLoss) and loss.use_sigmoid
    assert loss.needs_num_images is False
    assert MODELS.build(dict(type='DRLoss',
                             grouping='per_image')).needs_num_images
    # the name is ours, not one of mmdet's
    assert MODELS.get('DRLoss') is DRLoss
    assert MODELS.get('DRLoss').__module__.startswith('projects.')
    assert 'neg_lambda=0.07982' in repr(loss)
