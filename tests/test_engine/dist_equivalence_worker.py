"""Worker of test_distributed.py: a few SGD steps of a frozen-BN RetinaNet.

Run either as one process on both images, or under torchrun as two gloo
processes with one image each. Saves the parameters after steps 1 and 3.

    python dist_equivalence_worker.py OUT NORMALIZER
    torchrun --nproc_per_node 2 dist_equivalence_worker.py OUT NORMALIZER

With FOCAL_RETINA_TEST_CUDA_VISIBLE=1, ``torch.cuda.is_available()`` answers
True while the process group and DDP are set up, as on a GPU host: the CPU
run is pinned by ``device='cpu'`` and must not depend on it.
"""
import os
import sys
from contextlib import nullcontext
from unittest import mock

import torch

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.structures import InstanceData

from projects.focal_retina.engine.distributed import (
    CPUAwareDistributedDataParallel, setup_cpu_distributed)

# Two images with different numbers of boxes: per-process normalisers differ.
BOXES = [[[4., 6., 40., 44.]],
         [[8., 8., 28., 30.], [30., 20., 60., 60.], [2., 40., 20., 62.]]]


def sample(index: int):
    g = torch.Generator().manual_seed(100 + index)
    img = torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
    ds = DetDataSample(
        metainfo=dict(
            img_shape=(64, 64),
            ori_shape=(64, 64),
            pad_shape=(64, 64),
            scale_factor=(1., 1.),
            img_id=index))
    boxes = torch.tensor(BOXES[index])
    ds.gt_instances = InstanceData(
        bboxes=boxes, labels=torch.arange(len(boxes)) % 3)
    return img, ds


def build_model(normalizer: str):
    cfg = Config.fromfile(
        os.path.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py'))
    cfg.model.backbone.update(
        init_cfg=None,
        norm_eval=True,
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=False))  # frozen BN
    cfg.model.bbox_head.update(num_classes=3, normalizer=normalizer)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()  # ResNet applies norm_eval (BN in eval mode) in train()
    return model


def main() -> None:
    out, normalizer = sys.argv[1], sys.argv[2]
    register_all_modules()
    torch.use_deterministic_algorithms(True)
    distributed = 'WORLD_SIZE' in os.environ
    model = build_model(normalizer)
    if distributed:
        fake = os.environ.get('FOCAL_RETINA_TEST_CUDA_VISIBLE') == '1'
        with mock.patch.object(
                torch.cuda, 'is_available', return_value=True) if fake \
                else nullcontext():
            setup_cpu_distributed(Config(), 'pytorch', device='cpu')
            model = CPUAwareDistributedDataParallel(model, device_ids=[0])
        rank = int(os.environ['RANK'])
        indices = [rank]
    else:
        rank, indices = 0, [0, 1]
    optim = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    samples = [sample(i) for i in indices]
    data = dict(
        inputs=[s[0] for s in samples], data_samples=[s[1] for s in samples])
    snapshots = {}
    for step in range(1, 4):
        model.train_step(data, optim)
        if step in (1, 3):
            module = model.module if distributed else model
            snapshots[step] = {
                k: v.detach().clone()
                for k, v in module.named_parameters()
            }
    if rank == 0:
        torch.save(snapshots, out)


if __name__ == '__main__':
    main()
