"""The classification loss of a mini Table 1 run's first batch against hand
computation: with the classifier's weights zeroed every (anchor, class)
logit is its bias, so every term of the loss is known in closed form, and
the counts of positive and non-ignored anchors come from an independent
numpy assignment (tests/test_benchmarks/test_mini_table1_imbalance.py).
This is what rules out a bug behind a claim that fails (e.g. no-prior CE's
huge first loss: ln 2 on every term)."""
import importlib.util
import math
import os.path as osp

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.test_benchmarks.test_mini_table1_imbalance import (numpy_anchors,
                                                              numpy_assign)

K = 4  # shape classes


def parts():
    path = osp.join(ROOT, 'benchmarks', 'mini_table1.py')
    spec = importlib.util.spec_from_file_location('mini_table1_loss', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from benchmarks.mini_table1_parts import regimes, run
    return regimes, run


def first_batch_loss(name: str):
    """loss_cls of the quick regime's first batch (seed 0) with the
    classifier's weights zeroed, and (positives, non-ignored anchors) of
    that batch by the numpy assignment."""
    regimes, run = parts()
    regime = regimes.REGIMES['quick']
    images, objects = regimes.render_split(regime, 'train')
    model, _, _, _ = run.build(regime, name, 'adamw', 0, regime.iters)
    with torch.no_grad():
        model.bbox_head.retina_cls.weight.zero_()
    idx = [0, 1, 2, 3]
    data = run._batch(model, images, objects, idx, True)
    with torch.no_grad():
        losses = model.loss(data['inputs'], data['data_samples'])
    loss_cls = float(sum(losses['loss_cls']))
    anchors = numpy_anchors(regime.img_size, regime.img_size)
    pos = valid = 0
    for i in idx:
        counts = numpy_assign(anchors, objects[i][0].astype(np.float64))
        pos += counts['pos']
        valid += counts['pos'] + counts['neg']
    return loss_cls, pos, valid, model


def test_no_prior_ce_is_ln2_on_every_term():
    """Bias 0: p = .5 on all K x anchors terms, CE ln 2 each, alpha .5 on
    both sides; divided by the batch's positive anchors."""
    loss, pos, valid, model = first_batch_loss('ce_noprior')
    assert float(model.bbox_head.retina_cls.bias.detach().abs().max()) == 0
    expected = 0.5 * math.log(2) * K * valid / pos
    assert loss == pytest.approx(expected, rel=1e-4)
    assert loss > 1000  # the first loss the divergence curves start at


def test_focal_loss_with_the_prior():
    """Bias -ln 99: p = .01 on every term; the positive anchor's class
    alpha (1 - p)^2 (-ln p), every other term (1 - alpha) p^2 (-ln(1 - p)),
    alpha .25, gamma 2."""
    loss, pos, valid, _ = first_batch_loss('fl_g2')
    p, a = 0.01, 0.25
    pos_term = a * (1 - p)**2 * -math.log(p)
    neg_term = (1 - a) * p**2 * -math.log(1 - p)
    expected = (pos * pos_term + (K * valid - pos) * neg_term) / pos
    assert loss == pytest.approx(expected, rel=1e-4)


def test_alpha_ce_with_the_prior():
    """alpha .75, gamma 0: alpha (-ln p) on the positives' class, (1 -
    alpha)(-ln(1 - p)) on every other term."""
    loss, pos, valid, _ = first_batch_loss('ce_a075')
    p, a = 0.01, 0.75
    expected = (pos * a * -math.log(p) + (K * valid - pos) *
                (1 - a) * -math.log(1 - p)) / pos
    assert loss == pytest.approx(expected, rel=1e-4)


def test_ohem_13_is_plain_ohem_with_few_positives():
    """Why OHEM and OHEM 1:3 trained identically in the table: with fewer
    positives than the 1:3 quota (32 of a 128 batch) and all of them among
    the 128 highest losses, both keep those positives and the same hardest
    negatives; a positive ranked below the first 128 is where they part."""
    from projects.focal_retina.task_modules.ohem import select_image
    m = 3069
    scores = torch.linspace(10.0, 0.0, m)  # anchor i has the i-th loss
    valid = torch.ones(m, dtype=torch.bool)

    def kept(pos_idx, pos_fraction):
        is_pos = torch.zeros(m, dtype=torch.bool)
        is_pos[pos_idx] = True
        return select_image(scores, is_pos, valid, None, 128, None,
                            pos_fraction).tolist()

    assert kept([3, 50], None) == kept([3, 50], 0.25) == list(range(128))
    # a positive at rank 500: plain OHEM drops it, 1:3 keeps it in place of
    # the 128th negative
    assert kept([3, 500], None) == list(range(128))
    assert kept([3, 500], 0.25) == list(range(127)) + [500]
