"""tools/analysis/model_complexity.py: parameters against the built model's
own count, FLOPs against the conv formula, one row per config of the
settings table, the paper's times where Table 1e gives one."""
import csv
import importlib.util
import json
import os.path as osp

import pytest
import torch

from tests.conftest import ROOT

TOOL = osp.join(ROOT, 'tools', 'analysis', 'model_complexity.py')
R50_400 = 'configs/ablations/table1e_depth_scale/retina_r50_fpn_400_1x.py'
R50_400_CAFFE = R50_400.replace('.py', '_caffe.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('tool_model_complexity',
                                                  TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def csv_rows(path: str):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_flops_are_multiply_adds_of_the_forward():
    tool = load_tool()
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    counted = tool.count(conv, (20, 30))
    assert counted['flops'] == 3 * 8 * 9 * 20 * 30  # one per multiply-add
    assert counted['params'] == 3 * 8 * 9 + 8


def test_paper_input_size_and_time():
    tool = load_tool()
    # 640 x 480 at 800 px: 800 x 1066.7, padded to 32
    assert tool.paper_input_size(800, 1333, 32) == ((800, 1067), (800, 1088))
    assert tool.paper_input_size(400, 667, 32) == ((400, 533), (416, 544))
    entries = tool.configs_of(
        csv_rows(osp.join(ROOT, 'configs', 'paper_settings.csv')))
    assert tool.paper_ms(entries['configs/retina_r101_fpn_1.5x.py']) == 198
    assert tool.paper_ms(entries[R50_400]) == 64
    assert tool.paper_ms(entries[R50_400_CAFFE]) == 64
    fewer_anchors = ('configs/ablations/table1c_anchors/'
                     'retina_r50_fpn_600_1x_anchor-s1-r1.py')
    assert tool.paper_ms(entries[fewer_anchors]) is None
    x101 = entries['configs/retina_x101-64x4d_fpn_1.5x.py']
    assert tool.paper_ms(x101) is None  # the paper times no ResNeXt
    assert tool.backbone_name(x101['backbone'],
                              x101['depth']) == 'ResNeXt-101 64x4d'


def test_tiny_table_counts_every_config(tmp_path, monkeypatch):
    """A settings table of three rows (one config twice) at 64 x 64: a row
    per config, its tables merged, parameters as the model counts them."""
    rows = csv_rows(osp.join(ROOT, 'configs', 'paper_settings.csv'))
    picked = [r for r in rows if r['config'] == R50_400][:1]
    picked += [dict(picked[0], table='Table X')]
    picked += [r for r in rows if r['config'] == R50_400_CAFFE][:1]
    assert len(picked) == 3
    table = tmp_path / 'settings.csv'
    with open(table, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    monkeypatch.setenv('FOCAL_RETINA_RESULTS_DIR', str(tmp_path))
    tool = load_tool()
    monkeypatch.setattr(tool.results_io, 'RESULTS_DIR', str(tmp_path))
    tool.main(['--csv', str(table), '--size', '64', '64', '--results', 'tiny'])
    with open(tmp_path / 'tiny.json') as f:
        record = json.load(f)
    assert list(record['configs']) == [R50_400, R50_400_CAFFE]
    assert record['configs'][R50_400]['tables'] == ['Table 1e', 'Table X']
    assert record['distinct_networks'] == 2  # caffe strides elsewhere
    for path in (R50_400, R50_400_CAFFE):
        assert f'`{path}`' in record['table']

    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, R50_400))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    expected = sum(p.numel() for p in model.parameters())
    for path in (R50_400, R50_400_CAFFE):  # same weights, other strides
        assert record['configs'][path]['params'] == expected
    pytorch, caffe = (
        record['configs'][p]['gflops'] for p in (R50_400, R50_400_CAFFE))
    assert caffe < pytorch  # its first 1x1 conv strides: 1/4 the work


def test_stored_table_covers_every_config_of_the_csv():
    """benchmarks/results/model_complexity.json is regenerated when a
    config joins configs/paper_settings.csv."""
    configs = list(
        dict.fromkeys(r['config'] for r in csv_rows(
            osp.join(ROOT, 'configs', 'paper_settings.csv'))))
    with open(
            osp.join(ROOT, 'benchmarks', 'results',
                     'model_complexity.json')) as f:
        record = json.load(f)
    assert list(record['configs']) == configs
    for path in configs:
        assert f'`{path}`' in record['table']
        assert record['configs'][path]['params'] > 0
        assert record['configs'][path]['gflops'] > 0


@pytest.mark.parametrize('args,expected', [
    (['--csv', 'nope.csv'], "--csv 'nope.csv': file does not exist"),
    (['--filter', 'no_such_config'], "--filter 'no_such_config' matches "
     'no config'),
    (['--filter', '('], "--filter '(': not a regular expression"),
])
def test_bad_input_one_line(args, expected, capsys):
    tool = load_tool()
    with pytest.raises(SystemExit) as exc:
        tool.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
