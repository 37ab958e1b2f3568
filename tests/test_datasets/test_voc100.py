"""Real photos (../shared/data/voc100) through the data pipeline, a few
training iterations and CocoMetric evaluation.

The evaluation is checked with an oracle: the ground-truth boxes that come
out of the test pipeline (loaded, resized), mapped back to the original
image by the sample's ``scale_factor``, are fed to CocoMetric as
predictions. CocoMetric compares them with the annotation file itself, so
any fault in loading, resizing, label or image-id mapping or box format
lowers the AP below its hand-computed value.
"""
import json
import os.path as osp
from collections import Counter

import pytest
import torch
from mmdet.registry import DATASETS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.runner import Runner
from mmengine.structures import InstanceData

from tests.conftest import ROOT

TOL = 6e-4  # CocoMetric rounds its results to 3 decimals
register_all_modules()


def voc_config(voc100: str, work_dir: str) -> Config:
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py'))
    with open(osp.join(voc100, 'annotations.json')) as f:
        classes = tuple(c['name'] for c in json.load(f)['categories'])
    dataset = dict(
        type='CocoDataset',
        data_root=voc100,
        ann_file='annotations.json',
        data_prefix=dict(img='images/'),
        metainfo=dict(classes=classes))
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.dataset.update(dataset)
        loader.update(num_workers=0, persistent_workers=False)
    cfg.train_dataloader.batch_size = 4
    for split in ('val', 'test'):
        cfg[f'{split}_evaluator'].ann_file = osp.join(voc100,
                                                      'annotations.json')
    cfg.model.bbox_head.num_classes = len(classes)
    cfg.model.test_cfg.score_thr = 0.0  # an untrained model scores < 0.05
    cfg.train_cfg.update(max_iters=3, val_interval=3)
    cfg.default_hooks.checkpoint.interval = 3
    cfg.work_dir = work_dir
    return cfg


def test_voc100_pipeline_trains(voc100, tmp_path):
    cfg = voc_config(voc100, str(tmp_path))
    cfg.train_cfg.val_interval = 100  # evaluation: the oracle test below
    runner = Runner.from_cfg(cfg)
    sample = runner.train_dataloader.dataset[0]
    inputs = sample['inputs']
    assert inputs.dtype == torch.uint8 and inputs.shape[0] == 3
    assert max(inputs.shape[1:]) == 256  # resized from ~500 px photos
    assert len(sample['data_samples'].gt_instances) >= 1
    runner.train()
    scalars = runner.message_hub.log_scalars
    for key in ('train/loss_cls', 'train/loss_bbox'):
        values = scalars[key].data[0]
        assert len(values) == 3 and torch.isfinite(torch.tensor(values)).all()
    assert osp.isfile(tmp_path / 'iter_3.pth')


@pytest.fixture(scope='module')
def oracle(voc100, tmp_path_factory):
    """Samples of the test pipeline (ground truth loaded after the resize:
    original pixels), of the train pipeline without flip (ground truth
    resized with the image) and a function scoring predictions."""
    cfg = voc_config(voc100, str(tmp_path_factory.mktemp('voc')))
    test_set = DATASETS.build(cfg.val_dataloader.dataset)
    train_cfg = cfg.train_dataloader.dataset
    for t in train_cfg.pipeline:
        if t.type == 'RandomFlip':
            t.prob = 0.0
    train_set = DATASETS.build(train_cfg)
    samples = {
        name:
        sorted((ds[i]['data_samples'] for i in range(len(ds))),
               key=lambda d: d.metainfo['img_id'])
        for name, ds in (('test', test_set), ('train', train_set))
    }
    with open(osp.join(voc100, 'annotations.json')) as f:
        coco = json.load(f)

    def evaluate(make_pred, split='test') -> dict:
        evaluator = Evaluator(cfg.val_evaluator)
        evaluator.dataset_meta = test_set.metainfo
        for ds in samples[split]:
            ds = ds.clone()
            ds.pred_instances = make_pred(ds)
            evaluator.process(data_samples=[ds])
        return evaluator.evaluate(len(samples[split]))

    return samples, coco, evaluate


def gt_as_prediction(ds, resized: bool = False) -> InstanceData:
    """The sample's ground truth in original-image pixels, score 1;
    ``resized``: it was resized with the image (train pipeline), so it is
    mapped back by the scale factor as the head maps its boxes."""
    gt = ds.gt_instances
    boxes = gt.bboxes.tensor if hasattr(gt.bboxes, 'tensor') else gt.bboxes
    if resized:
        sx, sy = ds.metainfo['scale_factor']
        boxes = boxes / boxes.new_tensor([sx, sy, sx, sy])
    return InstanceData(
        bboxes=boxes.clone(),
        scores=torch.ones(len(gt)),
        labels=gt.labels.clone())


@pytest.mark.parametrize('split', ['test', 'train'])
def test_ground_truth_as_predictions_gives_ap_1(voc100, oracle, split):
    samples, coco, evaluate = oracle
    samples = samples[split]
    assert len(samples) == 100
    assert sum(len(ds.gt_instances)
               for ds in samples) == len(coco['annotations'])
    assert max(max(ds.metainfo['img_shape']) for ds in samples) == 256
    metrics = evaluate(
        lambda ds: gt_as_prediction(ds, resized=split == 'train'), split)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert metrics[key] == pytest.approx(1.0, abs=TOL), key
    if split == 'train':  # the boxes really were resized (~500 -> 256 px)
        ds = samples[0]
        assert ds.metainfo['scale_factor'][0] < 0.6
        assert gt_as_prediction(ds).bboxes.max() <= 256


def _recall_points(n: int) -> int:
    """COCO recall thresholds 0, .01, ..., 1 reached at recall (n-1)/n."""
    return sum(1 for i in range(101) if i / 100 <= (n - 1) / n)


def test_one_shifted_box_gives_the_hand_computed_ap(voc100, oracle):
    """One box of a class with n boxes shifted sideways by 3/13 of its
    width (IoU (1 - f) / (1 + f) = 0.625) and scored last: it matches at
    IoU thresholds .50, .55, .60 only; at the 7 others that class reaches
    recall (n - 1) / n with precision 1. COCO's AP (101 recall points,
    10 IoU thresholds, mean over classes with boxes) is then known."""
    samples, coco, evaluate = oracle
    counts = Counter(a['category_id'] for a in coco['annotations'])
    # a class whose (n-1)/n falls clear of the 0.01 recall grid
    cat_id, n = next(
        (c, k) for c, k in sorted(counts.items()) if k >= 3 and 100 % k != 0)
    label = [c['id'] for c in coco['categories']].index(cat_id)
    img_id, j = next((ds.metainfo['img_id'], j) for ds in samples['test']
                     for j, lab in enumerate(ds.gt_instances.labels.tolist())
                     if lab == label)

    def shifted(ds):
        pred = gt_as_prediction(ds)
        if ds.metainfo['img_id'] == img_id:
            box = pred.bboxes[j]
            box[[0, 2]] += (box[2] - box[0]) * 3 / 13
            pred.scores[j] = 0.5
        return pred

    metrics = evaluate(shifted)
    ap_class = (3 + 7 * _recall_points(n) / 101) / 10
    expected = (len(counts) - 1 + ap_class) / len(counts)
    assert metrics['coco/bbox_mAP'] == pytest.approx(expected, abs=TOL)
    assert metrics['coco/bbox_mAP_50'] == pytest.approx(1.0, abs=TOL)
    ap75 = (len(counts) - 1 + _recall_points(n) / 101) / len(counts)
    assert metrics['coco/bbox_mAP_75'] == pytest.approx(ap75, abs=TOL)
