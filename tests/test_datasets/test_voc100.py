"""Real photos (../shared/data/voc100) through the data pipeline, a few
training iterations and CocoMetric evaluation."""
import json
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from tests.conftest import ROOT


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


def test_voc100_pipeline_train_and_coco_metric(voc100, tmp_path):
    cfg = voc_config(voc100, str(tmp_path))
    runner = Runner.from_cfg(cfg)
    sample = runner.train_dataloader.dataset[0]
    inputs = sample['inputs']
    assert inputs.dtype == torch.uint8 and inputs.shape[0] == 3
    assert max(inputs.shape[1:]) == 256  # resized from ~500 px photos
    assert len(sample['data_samples'].gt_instances) >= 1
    runner.train()
    metrics = runner.val_loop.run()
    assert len(runner.val_dataloader.dataset) == 100
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_s'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0
