"""One-stage OHEM / OHEM 1:3 (paper Sec. 5.1, Table 1d): the selection on
hand-built cases, its exact pre-selection against a plain greedy NMS, the
1:3 rule against mmdet's SSDHead, and the head's use of it (zero gradient
for unkept anchors, normalisers, bf16, per-image independence)."""
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from projects.focal_retina.task_modules import ohem
from projects.focal_retina.task_modules.ohem import (OneStageOHEMSampler,
                                                     select_image)
from tests.conftest import free_port

NUM_CLASSES = 3
IMG = dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1., 1.))


def greedy_nms(boxes, iou_thr):
    """Plain-Python greedy NMS over boxes already sorted by score (the
    independent reference); IoU with mmdet's 0-offset convention."""
    keep = []
    for i, b in enumerate(boxes.tolist()):
        ok = True
        for j in keep:
            a = boxes[j].tolist()
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) *
                     (b[3] - b[1]) - inter)
            if inter / union > iou_thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def reference_select(scores, is_pos, valid, boxes, batch, iou, frac=None):
    """Sort all valid examples by loss (stable), NMS them all, then keep
    the first ``batch`` (OHEM) or the 1:3 quota -- no pre-selection."""
    cand = [i for i in range(len(scores)) if valid[i]]
    cand.sort(key=lambda i: -float(scores[i]))  # stable
    surv = [cand[k] for k in greedy_nms(boxes[cand], iou)] if cand else []
    if frac is None:
        return sorted(surv[:batch])
    pos = [i for i in surv if is_pos[i]]
    neg = [i for i in surv if not is_pos[i]]
    k_pos = min(len(pos), int(batch * frac))
    k_neg = min(len(neg), batch - k_pos)
    k_pos = min(k_pos, k_neg // 3) if frac == 0.25 else k_pos
    return sorted(pos[:k_pos] + neg[:k_neg])


def run(scores,
        is_pos,
        valid,
        boxes,
        batch,
        iou,
        frac=None,
        factor=4,
        max_candidates=16384):
    scores = torch.as_tensor(scores, dtype=torch.float32)
    keep = select_image(scores, torch.as_tensor(is_pos),
                        torch.as_tensor(valid), lambda idx: boxes[idx], batch,
                        iou, frac, factor, max_candidates)
    return keep.tolist()


# Hand-built case. A and B overlap with IoU 100/160 = 0.625: B is
# suppressed at 0.5 but not at 0.7. C is disjoint; D has the highest loss
# but is ignored; E has the lowest loss.
HAND_BOXES = torch.tensor([
    [0., 0., 10., 10.],  # A, loss 5
    [0., 0., 10., 16.],  # B, loss 4, IoU(A, B) = 0.625
    [20., 20., 30., 30.],  # C, loss 3
    [40., 40., 50., 50.],  # D, loss 100, ignored
    [60., 60., 70., 70.],  # E, loss 0.1
])
HAND_SCORES = [5., 4., 3., 100., .1]
HAND_VALID = [True, True, True, False, True]
NO_POS = [False] * 5


@pytest.mark.parametrize(
    'iou, batch, expected',
    [
        (0.5, 2, [0, 2]),  # B suppressed: A, C
        (0.7, 2, [0, 1]),  # B survives: A, B
        (0.5, 3, [0, 2, 4]),
        (0.7, 3, [0, 1, 2]),
        (0.5, 10, [0, 2, 4]),  # fewer survivors than batch: all of them
        (None, 10, [0, 1, 2, 4]),  # no NMS: every non-ignored example
    ])
def test_hand_built_case(iou, batch, expected):
    assert math.isclose(
        float(bbox_overlaps(HAND_BOXES[:1], HAND_BOXES[1:2])), 0.625)
    for factor in (1, 4):
        got = run(
            HAND_SCORES,
            NO_POS,
            HAND_VALID,
            HAND_BOXES,
            batch,
            iou,
            factor=factor)
        assert got == expected
    assert 3 not in got  # the ignored anchor, despite its loss


def test_exactly_batch_size_when_enough_survivors():
    torch.manual_seed(0)
    boxes = disjoint_boxes(50)
    scores = torch.rand(50)
    for batch in (1, 7, 49, 50):
        got = run(scores, [False] * 50, [True] * 50, boxes, batch, 0.5)
        assert len(got) == batch
        # the highest losses, as nothing overlaps
        assert got == sorted(scores.argsort(descending=True)[:batch].tolist())


def disjoint_boxes(n):
    x = torch.arange(n, dtype=torch.float32) * 20
    return torch.stack([x, x, x + 10, x + 10], dim=1)


def dense_case(seed, n=400, ties=True):
    """Many overlapping boxes on a grid, tied losses, some ignored."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 40, (n, 2), generator=g).float()
    wh = torch.randint(8, 24, (n, 2), generator=g).float()
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(n, generator=g)
    if ties:
        scores = (scores * 8).floor()  # only 8 distinct losses
    is_pos = torch.rand(n, generator=g) < 0.15
    valid = torch.rand(n, generator=g) > 0.1
    return scores, is_pos, valid, boxes


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('iou', [0.5, 0.7])
@pytest.mark.parametrize('batch, frac', [(4, None), (16, None), (64, None),
                                         (8, 0.25), (32, 0.25), (64, 0.25)])
def test_pre_selection_does_not_change_the_kept_set(seed, iou, batch, frac,
                                                    monkeypatch):
    """NMS over the top pre_nms_factor * batch losses, doubled until
    decided, keeps exactly what NMS over all examples keeps."""
    scores, is_pos, valid, boxes = dense_case(seed)
    sizes = []
    nms = ohem.nms

    def spy(b, s, thr):
        sizes.append(b.size(0))
        return nms(b, s, thr)

    monkeypatch.setattr(ohem, 'nms', spy)
    want = reference_select(scores, is_pos, valid, boxes, batch, iou, frac)
    for factor, bound in ((1, 16384), (2, 16384), (1000, 16384), (1, None)):
        sizes.clear()
        got = run(scores, is_pos, valid, boxes, batch, iou, frac, factor,
                  bound)
        assert got == want
        assert sizes[-1] <= int(valid.sum())
        if factor == 1 and (batch >= 32 or iou == 0.5 and batch >= 16):
            # the first prefix (batch examples) was too short: it grew
            assert len(sizes) > 1 and sizes[0] == batch
    assert len(want) > 0


def test_pre_selection_looks_at_a_prefix_only(monkeypatch):
    scores, is_pos, valid, boxes = dense_case(0, n=4000, ties=False)
    sizes = []
    nms = ohem.nms
    monkeypatch.setattr(ohem, 'nms',
                        lambda b, s, t: sizes.append(len(b)) or nms(b, s, t))
    got = run(scores, is_pos, valid, boxes, 16, 0.7, None, 4)
    assert len(got) == 16
    assert sizes[0] == 64 and max(sizes) < int(valid.sum())


def test_one_to_three_with_plentiful_positives():
    """10 positives with the highest losses, 20 negatives, disjoint boxes:
    the batch of 8 holds 2 positives and 6 negatives, each the hardest."""
    n = 30
    boxes = disjoint_boxes(n)
    scores = torch.arange(n, 0, -1).float()  # anchor 0 hardest
    is_pos = [i < 10 for i in range(n)]
    got = run(scores, is_pos, [True] * n, boxes, 8, 0.5, 0.25)
    assert got == [0, 1] + list(range(10, 16))
    # plain OHEM would keep the 8 positives
    assert run(scores, is_pos, [True] * n, boxes, 8, 0.5) == list(range(8))


@pytest.mark.parametrize(
    'num_pos, want_pos, want_neg',
    [
        (1, 1, 7),  # scarce: the batch is filled with negatives
        (0, 0, 8),
        (2, 2, 6),
    ])
def test_one_to_three_with_scarce_positives(num_pos, want_pos, want_neg):
    n = 30
    boxes = disjoint_boxes(n)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(1))
    is_pos = [i < num_pos for i in range(n)]
    got = run(scores, is_pos, [True] * n, boxes, 8, 0.5, 0.25)
    assert sum(is_pos[i] for i in got) == want_pos
    assert len(got) - want_pos == want_neg
    negs = [i for i in range(num_pos, n)]
    negs.sort(key=lambda i: -float(scores[i]))
    assert [i for i in got if not is_pos[i]] == sorted(negs[:want_neg])


def test_one_to_three_with_scarce_negatives():
    """At most one positive per three negatives, even on a tiny image."""
    n = 14
    boxes = disjoint_boxes(n)
    scores = torch.arange(n, 0, -1).float()
    is_pos = [i < 10 for i in range(n)]  # 10 positives, 4 negatives
    got = run(scores, is_pos, [True] * n, boxes, 16, 0.5, 0.25)
    assert got == [0, 10, 11, 12, 13]


def test_max_candidates_bounds_the_search():
    """An easy positive ranked below max_candidates examples is not a
    candidate; without the bound it enters the 1:3 quota."""
    n = 40
    boxes = disjoint_boxes(n)
    scores = torch.arange(n, 0, -1).float()
    is_pos = [i == n - 1 for i in range(n)]  # the easiest example
    exact = run(scores, is_pos, [True] * n, boxes, 8, 0.5, 0.25, 1, None)
    assert exact == list(range(7)) + [n - 1]
    bounded = run(scores, is_pos, [True] * n, boxes, 8, 0.5, 0.25, 1, 16)
    assert bounded == list(range(8))
    # plain OHEM keeps the top 8 either way
    assert run(scores, is_pos, [True] * n, boxes, 8, 0.5, None, 1, 8) == \
        list(range(8))


def test_one_to_three_counts_positives_after_nms():
    """A positive suppressed by a harder negative does not count."""
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 11.],
                          [20., 20., 30., 30.], [40., 40., 50., 50.],
                          [60., 60., 70., 70.], [80., 80., 90., 90.]])
    scores = [6., 5., 4., 3., 2., 1.]  # 1 is a positive hidden by 0
    is_pos = [False, True, False, False, False, True]
    got = run(scores, is_pos, [True] * 6, boxes, 4, 0.5, 0.25)
    assert got == [0, 2, 3, 5]
    assert run(scores, is_pos, [True] * 6, boxes, 4, None, 0.25) == \
        [0, 1, 2, 3]


def ssd_head(num_classes):
    return SSDHead(
        num_classes=num_classes,
        in_channels=(8, ) * 6,  # one per level of SSD300
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            scale_major=False,
            input_size=300,
            basesize_ratio_range=(0.15, 0.9),
            strides=[8, 16, 32, 64, 100, 300],
            ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]]),
        train_cfg=ConfigDict(
            assigner=dict(
                type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5),
            sampler=dict(type='PseudoSampler'),
            smoothl1_beta=1.,
            allowed_border=-1,
            pos_weight=-1,
            neg_pos_ratio=3,
            debug=False))


@pytest.mark.parametrize('num_pos', [1, 5, 12])
def test_no_nms_limit_of_one_to_three_is_ssd_hard_negative_mining(num_pos):
    """Without NMS and with batch_size = 4 * num_pos, OHEM 1:3 keeps all
    positives and the 3 * num_pos highest-loss negatives: mmdet's SSDHead
    rule. Shared case: SSD's softmax CE as the score."""
    torch.manual_seed(num_pos)
    m, k = 80, NUM_CLASSES
    logits = torch.randn(m, k + 1) * 3
    labels = torch.full((m, ), k, dtype=torch.long)
    labels[torch.randperm(m)[:num_pos]] = torch.randint(0, k, (num_pos, ))
    weights = torch.ones(m)
    avg_factor = float(num_pos)
    head = ssd_head(k)
    zeros = torch.zeros(m, 4)
    want, _ = head.loss_by_feat_single(logits, zeros, zeros, labels, weights,
                                       zeros, zeros, avg_factor)
    scores = F.cross_entropy(logits, labels, reduction='none')
    is_pos = labels < k
    keep = select_image(scores, is_pos, weights > 0, lambda idx: None,
                        4 * num_pos, None, 0.25)
    assert int(is_pos[keep].sum()) == num_pos
    assert len(keep) == 4 * num_pos
    torch.testing.assert_close(scores[keep].sum()[None] / avg_factor, want)


@pytest.mark.parametrize(
    'bad',
    [
        dict(batch_size=0),
        dict(batch_size=1.5),
        dict(nms_iou=0.0),
        dict(nms_iou=1.2),
        dict(pos_fraction=1.0),
        dict(pos_fraction=0.0),
        dict(cls_avg_factor='mean'),
        dict(pre_nms_factor=0),
        dict(max_candidates=100),  # below the default batch_size 256
        dict(max_candidates=1e4),
    ])
def test_invalid_settings(bad):
    with pytest.raises(ValueError, match=list(bad)[0]):
        TASK_UTILS.build(dict(type='OneStageOHEMSampler', **bad))


def test_refused_by_a_head_that_would_ignore_it():
    cfg = head_cfg()
    cfg['type'] = 'RetinaHead'
    del cfg['normalizer']
    cfg['loss_cls'] = dict(type='FocalLoss', use_sigmoid=True)
    with pytest.raises(ValueError, match='OneStageOHEMSampler'):
        MODELS.build(cfg)


def test_refused_with_a_loss_that_needs_whole_images(monkeypatch):
    """Kept rows are no longer N equal blocks of anchors."""
    from projects.focal_retina.losses import FocalFamilyLoss
    monkeypatch.setattr(
        FocalFamilyLoss, 'needs_num_images', True, raising=False)
    with pytest.raises(ValueError, match='needs_num_images'):
        MODELS.build(head_cfg())


@pytest.mark.parametrize('grouping', ['per_batch', 'per_image'])
def test_refused_with_the_dr_loss(grouping):
    """DRLoss(reduction='none') gives one value per softmax group, not one
    per anchor: with OHEM the first loss_by_feat failed (IndexError). The
    model must refuse the pair when it is built, naming both settings."""
    cfg = head_cfg()
    cfg['loss_cls'] = dict(type='DRLoss', grouping=grouping)
    with pytest.raises(ValueError) as err:
        MODELS.build(cfg)
    msg = str(err.value)
    for part in ('OneStageOHEMSampler', f"DRLoss(grouping='{grouping}')",
                 'per_image', 'FocalFamilyLoss'):
        assert part in msg, (part, msg)
    # The DR loss without a sampler builds (the configs of dr_loss/).
    cfg['train_cfg'] = ConfigDict(cfg['train_cfg'], sampler=dict(
        type='PseudoSampler'))
    MODELS.build(cfg)


def head_cfg(normalizer='global', **sampler):
    sampler = dict(
        dict(type='OneStageOHEMSampler', batch_size=16, nms_iou=0.5),
        **sampler)
    return dict(
        type='FocalRetinaHead',
        num_classes=NUM_CLASSES,
        in_channels=8,
        stacked_convs=1,
        feat_channels=8,
        normalizer=normalizer,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0] * 4,
            target_stds=[1.0] * 4),
        loss_cls=dict(type='FocalFamilyLoss', gamma=0.0, alpha=None),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0),
        train_cfg=ConfigDict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.4,
                min_pos_iou=0,
                ignore_iof_thr=-1),
            sampler=sampler,
            allowed_border=-1,
            pos_weight=-1,
            debug=False))


GTS = [[[4., 4., 36., 40.], [30., 30., 62., 50.]], [[10., 20., 60., 50.]]]
NUM_ANCHORS = (8 * 8 + 4 * 4) * 9


def gts(boxes_per_image=GTS):
    out = []
    for boxes in boxes_per_image:
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        out.append(InstanceData(bboxes=b, labels=torch.arange(len(b)) % 3))
    return out


def forward(head, num_imgs=2, seed=0):
    torch.manual_seed(seed)
    x = [torch.randn(num_imgs, 8, 8, 8), torch.randn(num_imgs, 8, 4, 4)]
    cls_scores, bbox_preds = head(x)
    for t in cls_scores:
        t.retain_grad()
    return cls_scores, bbox_preds


def rows(maps, c):
    n = maps[0].size(0)
    return torch.cat([m.permute(0, 2, 3, 1).reshape(n, -1, c) for m in maps],
                     1)


def build(cfg):
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def kept_and_targets(head, cls_scores, bbox_preds, images):
    """The kept rows (from the sampler) and the head's targets."""
    metas = [IMG] * len(images)
    anchors, valid = head.get_anchors([(8, 8), (4, 4)], metas, device='cpu')
    t = head.get_targets(anchors, valid, images, metas)
    labels = torch.cat(t[0], 1).reshape(-1)
    weights = torch.cat(t[1], 1).reshape(-1)
    flat_anchors = torch.cat([torch.cat(a) for a in anchors])
    keep, counts = head.sampler.select_examples(
        rows(cls_scores, NUM_CLASSES).reshape(-1, NUM_CLASSES),
        rows(bbox_preds, 4).reshape(-1, 4), flat_anchors, labels, weights,
        len(images), head.loss_cls, head.bbox_coder)
    return keep, counts, labels, weights, t[4]


@pytest.mark.parametrize('frac', [None, 0.25])
def test_head_gradients_only_for_kept_examples(frac):
    head = build(head_cfg(pos_fraction=frac))
    images = gts()
    cls_scores, bbox_preds = forward(head)
    losses = head.loss_by_feat(cls_scores, bbox_preds, images, [IMG] * 2)
    keep, counts, labels, weights, avg_factor = kept_and_targets(
        head, cls_scores, bbox_preds, images)
    assert isinstance(head.sampler, OneStageOHEMSampler)
    assert counts.tolist() == [16, 16]
    assert (weights[keep] > 0).all()
    sum(losses['loss_cls']).backward()
    grad = rows([c.grad for c in cls_scores], NUM_CLASSES)
    grad = grad.reshape(-1, NUM_CLASSES)
    nonzero = grad.abs().sum(1) > 0
    unkept = torch.ones(len(grad), dtype=torch.bool)
    unkept[keep] = False
    assert not nonzero[unkept].any()  # zero for every unkept example
    assert nonzero[keep].all()
    # the value: sigmoid CE summed over the kept (anchor, class) pairs,
    # divided by the number of positives (one-hot built independently)
    logits = rows(cls_scores, NUM_CLASSES).reshape(-1, NUM_CLASSES)[keep]
    onehot = F.one_hot(labels[keep], NUM_CLASSES + 1)[:, :NUM_CLASSES]
    want = F.binary_cross_entropy_with_logits(
        logits, onehot.float(), reduction='sum') / avg_factor
    torch.testing.assert_close(sum(losses['loss_cls']), want)
    assert float(avg_factor) == int((labels < NUM_CLASSES).sum())


def test_box_loss_keeps_all_positives():
    ohem_head = build(head_cfg(batch_size=1))
    plain_cfg = head_cfg()
    plain_cfg['train_cfg']['sampler'] = dict(type='PseudoSampler')
    plain = build(plain_cfg)
    plain.load_state_dict(ohem_head.state_dict())
    images = gts()
    got = ohem_head.loss_by_feat(*forward(ohem_head), images, [IMG] * 2)
    want = plain.loss_by_feat(*forward(plain), images, [IMG] * 2)
    assert sum(got['loss_bbox']) > 0
    torch.testing.assert_close(sum(got['loss_bbox']), sum(want['loss_bbox']))
    assert sum(got['loss_cls']) < sum(want['loss_cls'])


@pytest.mark.parametrize('normalizer', ['global', 'per_gpu'])
def test_num_kept_normaliser(normalizer):
    head = build(head_cfg(normalizer, cls_avg_factor='num_kept'))
    ref = build(head_cfg(normalizer))
    ref.load_state_dict(head.state_dict())
    images = gts([GTS[0], []])  # the second image has no box
    got = head.loss_by_feat(*forward(head), images, [IMG] * 2)
    want = ref.loss_by_feat(*forward(ref), images, [IMG] * 2)
    keep, counts, labels, _, num_pos = kept_and_targets(
        ref, *forward(ref), images)
    assert counts.tolist() == [16, 16]
    positives = int((labels < NUM_CLASSES).sum())
    # global: the positives; per GPU: sum of max(num_pos, 1) per image
    assert float(num_pos) == positives + (normalizer == 'per_gpu')
    # the same kept sum, divided by the kept count (2 x 16) instead
    torch.testing.assert_close(
        sum(got['loss_cls']) * 32,
        sum(want['loss_cls']) * float(num_pos))


def test_selection_is_per_image():
    """Image 1's minibatch is the same alone or in a batch of two: the
    selection needs nothing from other images (or other processes)."""
    head = build(head_cfg())
    images = gts()
    cls2, box2 = forward(head, 2)
    keep2, _, _, _, _ = kept_and_targets(head, cls2, box2, images)
    cls1 = [c[1:] for c in cls2]
    box1 = [b[1:] for b in box2]
    keep1, _, _, _, _ = kept_and_targets(head, cls1, box1, images[1:])
    assert (keep2[keep2 >= NUM_ANCHORS] - NUM_ANCHORS).tolist() == \
        keep1.tolist()


def test_bf16_autocast():
    head = build(head_cfg(pos_fraction=0.25))
    images = gts()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        cls_scores, bbox_preds = forward(head)
        assert cls_scores[0].dtype == torch.bfloat16
        losses = head.loss_by_feat(cls_scores, bbox_preds, images, [IMG] * 2)
    loss = sum(losses['loss_cls']) + sum(losses['loss_bbox'])
    assert torch.isfinite(loss)
    loss.backward()
    grad = rows([c.grad for c in cls_scores], NUM_CLASSES)
    assert torch.isfinite(grad.float()).all()
    assert int((grad.reshape(-1, NUM_CLASSES).abs().sum(1) > 0).sum()) \
        == 32


def test_empty_image_and_extreme_logits():
    head = build(head_cfg(pos_fraction=0.25))
    cls_scores, bbox_preds = forward(head)
    with torch.no_grad():
        cls_scores[0][0, :5] = 1e4
        cls_scores[0][1, :5] = -1e4
    losses = head.loss_by_feat(cls_scores, bbox_preds, gts([[], []]),
                               [IMG] * 2)
    assert torch.isfinite(sum(losses['loss_cls']))
    assert sum(losses['loss_bbox']) == 0


def _head_grads(cfg, rank=None, world=1):
    """Gradients of the head's parameters: one process with both images
    (rank None) or image ``rank`` on this process, DDP-averaged."""
    torch.manual_seed(0)
    head = build(cfg)
    cls_scores, bbox_preds = forward(head, 2)
    images, imgs = gts(), slice(None)
    if rank is not None:
        imgs = slice(rank, rank + 1)
        cls_scores = [c[imgs] for c in cls_scores]
        bbox_preds = [b[imgs] for b in bbox_preds]
    losses = head.loss_by_feat(cls_scores, bbox_preds, images[imgs],
                               [IMG] * len(images[imgs]))
    (sum(losses['loss_cls']) + sum(losses['loss_bbox'])).backward()
    grads = [p.grad.clone() for p in head.parameters()]
    for g in grads:  # what DDP does to gradients
        if world > 1:
            dist.all_reduce(g)
        g /= world
    return grads


def _dist_worker(rank, world, port, out, sampler):
    torch.set_num_threads(1)
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world)
    try:
        grads = _head_grads(head_cfg(**sampler), rank, world)
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('sampler', [
    dict(cls_avg_factor='num_pos'),
    dict(cls_avg_factor='num_kept', nms_iou=None, batch_size=1000),
])
def test_two_processes_match_one_with_global_normaliser(sampler, tmp_path):
    """2 gloo processes x 1 image == 1 process x 2 images: selection is
    per image, and both counts are all-reduced. Without NMS and with a
    batch above the anchor count, every non-ignored anchor is kept: the
    images (different ignore bands) keep different numbers, so a per-process
    count would not match."""
    torch.manual_seed(0)
    head = build(head_cfg(**sampler))
    counts = kept_and_targets(head, *forward(head), gts())[1].tolist()
    if sampler['cls_avg_factor'] == 'num_kept':
        assert counts[0] != counts[1]
    out = str(tmp_path / 'grads.pth')
    mp.spawn(
        _dist_worker, args=(2, free_port(), out, sampler), nprocs=2, join=True)
    got = torch.load(out)
    want = _head_grads(head_cfg(**sampler))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
