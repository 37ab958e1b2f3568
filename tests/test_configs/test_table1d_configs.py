"""The ten configs of the paper's Table 1d (Sec. 5.1, R-101-FPN, 600 px):
their settings and header rows, and two training iterations of each on
tiny inputs."""
import glob
import math
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from projects.focal_retina.task_modules import OneStageOHEMSampler
from tests.conftest import ROOT

register_all_modules()
FOLDER = osp.join(ROOT, 'configs', 'ablations', 'table1d_ohem')
PREFIX = 'retina_r101_fpn_600_1x_'
# (file suffix, row of Table 1d, batch size, nms, pos_fraction, paper AP)
TABLE_1D = [
    ('ohem-b128-nms07', 'OHEM', 128, 0.7, None, 31.1),
    ('ohem-b256-nms07', 'OHEM', 256, 0.7, None, 31.8),
    ('ohem-b512-nms07', 'OHEM', 512, 0.7, None, 30.6),
    ('ohem-b128-nms05', 'OHEM', 128, 0.5, None, 32.8),
    ('ohem-b256-nms05', 'OHEM', 256, 0.5, None, 31.0),
    ('ohem-b512-nms05', 'OHEM', 512, 0.5, None, 27.6),
    ('ohem13-b128-nms05', 'OHEM 1:3', 128, 0.5, 0.25, 31.1),
    ('ohem13-b256-nms05', 'OHEM 1:3', 256, 0.5, 0.25, 28.3),
    ('ohem13-b512-nms05', 'OHEM 1:3', 512, 0.5, 0.25, 24.0),
    ('fl', 'FL', None, None, None, 36.0),
]
IDS = [row[0] for row in TABLE_1D]


def path_of(suffix: str) -> str:
    return osp.join(FOLDER, f'{PREFIX}{suffix}.py')


def test_the_folder_holds_the_ten_rows():
    leaves = {osp.basename(p) for p in glob.glob(osp.join(FOLDER, '*.py'))}
    assert leaves == {f'{PREFIX}{row[0]}.py' for row in TABLE_1D}


@pytest.mark.parametrize('row', TABLE_1D, ids=IDS)
def test_settings_and_header(row):
    suffix, name, batch, nms, frac, ap = row
    with open(path_of(suffix)) as f:
        header = f.readline()
    assert header.startswith('# Table 1d: ')
    row_name = header[len('# Table 1d: '):].split(',')[0].split(' (')[0]
    assert row_name == name and header.endswith(f'paper AP {ap}.\n')
    cfg = Config.fromfile(path_of(suffix))
    assert cfg.model.backbone.depth == 101
    assert 'resnet101' in cfg.model.backbone.init_cfg.checkpoint
    resize = [t for t in cfg.train_pipeline if t['type'] == 'Resize']
    assert resize[0]['scale'] == (1000, 600)  # 600 px ablation scale
    head = cfg.model.bbox_head
    assert head.type == 'FocalRetinaHead' and head.prior_prob == 0.01
    sampler = cfg.model.train_cfg.sampler
    loss = head.loss_cls
    if name == 'FL':
        assert (loss.gamma, loss.alpha) == (2.0, 0.25)
        assert sampler.to_dict() == dict(type='PseudoSampler')
        return
    assert (loss.gamma, loss.alpha) == (0.0, None)  # CE scores examples
    assert sampler.to_dict() == dict(
        type='OneStageOHEMSampler',
        batch_size=batch,
        nms_iou=nms,
        pos_fraction=frac)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a CPU shared with other jobs, two threads
    of R-101 stall each other (measured 33 s vs 4.6 s for one step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('row', TABLE_1D, ids=IDS)
def test_builds_and_trains_two_iterations(row, one_thread):
    suffix, name, batch = row[:3]
    torch.manual_seed(0)
    cfg = Config.fromfile(path_of(suffix))
    cfg.model.backbone.init_cfg = None  # no pretrained weights here
    model = MODELS.build(cfg.model)
    # The head's init (prior); mmengine's whole-model init logs and
    # compares every parameter (~15 s for R-101) and is not under test.
    model.bbox_head.init_weights()
    model.train()
    if batch is None:
        assert not isinstance(model.bbox_head.sampler, OneStageOHEMSampler)
    else:
        assert isinstance(model.bbox_head.sampler, OneStageOHEMSampler)
        assert model.bbox_head.sampler.batch_size == batch
    optim = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    data = demo_mm_inputs(
        2, [[3, 64, 64], [3, 64, 64]], num_items=[3, 1], num_classes=80)
    before = model.bbox_head.retina_cls.weight.detach().clone()
    for _ in range(2):
        log_vars = model.train_step(data, optim)
        for key in ('loss', 'loss_cls', 'loss_bbox'):
            assert math.isfinite(float(log_vars[key])), key
        assert float(log_vars['loss_cls']) > 0
    assert not torch.equal(before, model.bbox_head.retina_cls.weight)
