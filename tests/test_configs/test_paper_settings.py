"""Every paper config resolves to the settings of its row of
``configs/paper_settings.csv``, every config has a row and every row a
config, and the README's reproduction table is the one generated from it.

The table is typed from the paper (Tables 1a-1e, 2, 3, Sec. 5.1) and the DR
loss's public settings; it is the expectation, the configs are under test.
"""
import glob
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from projects.focal_retina.utils.paper_settings import (SETTINGS, load_table,
                                                        resolve_settings)
from tests.conftest import ROOT

# Configs that are not experiments of the paper (the demo, the own-data
# recipes, mmdet's released models, and the examples the docs measure on
# other data, e.g. BCCD).
NOT_PAPER = ('configs/demo/', 'configs/examples/', 'configs/own_data/',
             'configs/pretrained/')
ROWS = load_table()
BY_CONFIG = {}  # config -> its first row (a config may reproduce several)
for _row in ROWS:
    BY_CONFIG.setdefault(_row['config'], _row)


def paper_configs():
    paths = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    rel = (osp.relpath(p, ROOT) for p in paths)
    return sorted(p for p in rel
                  if '_base_' not in p and not p.startswith(NOT_PAPER))


def test_every_config_has_a_row_and_every_row_a_config():
    configs = set(paper_configs())
    missing_rows = sorted(configs - set(BY_CONFIG))
    missing_configs = sorted(set(BY_CONFIG) - configs)
    assert not missing_rows, f'configs without a row: {missing_rows}'
    assert not missing_configs, f'rows without a config: {missing_configs}'


def test_one_config_per_distinct_model():
    """Cells that share a config state the same settings, and no two
    configs state the same settings (each config is checked against its
    rows below, so no two configs resolve to the same model)."""
    by_settings = {}
    for row in ROWS:
        settings = tuple(row[k] for k in SETTINGS)
        first = BY_CONFIG[row['config']]
        assert settings == tuple(first[k] for k in SETTINGS), (
            f'{row["config"]}: {row["table"]} {row["row"]} states other '
            'settings than its first row')
        other = by_settings.setdefault(settings, row['config'])
        assert other == row['config'], (
            f'{other} and {row["config"]} are the same model')


def test_shared_configs_name_the_paper_cells():
    """The cells the issue found duplicated are one config each now."""
    default = 'configs/ablations/retina_r50_fpn_600_1x.py'
    cells = {(r['table'], r['row']) for r in ROWS if r['config'] == default}
    assert cells == {('Sec. 5.1', 'ablation default (FL gamma 2, alpha '
                      '.25)'), ('Table 1b', 'gamma = 2, alpha = 0.25'),
                     ('Table 1c', '3 scales x 3 ratios'),
                     ('Table 1e', 'R-50, 600 px'),
                     ('Table 3', 'FL gamma = 2')}
    r50_800 = [(r['table'], r['row']) for r in ROWS
               if r['config'] == 'configs/retina_r50_fpn_1x.py']
    assert r50_800 == [('Table 1e', 'R-50, 800 px')]


@pytest.mark.parametrize('config', sorted(BY_CONFIG))
def test_config_resolves_to_its_row(config):
    row = BY_CONFIG[config]
    resolved = resolve_settings(Config.fromfile(osp.join(ROOT, config)))
    wrong = {
        k: (resolved[k], row[k])
        for k in SETTINGS if resolved[k] != row[k]
    }
    assert not wrong, f'{config}: (config, paper) {wrong}'


def test_resolver_sees_a_changed_setting(tmp_path):
    """A leaf changing gamma no longer matches its row (the check bites)."""
    leaf = tmp_path / 'leaf.py'
    base = osp.join(ROOT, 'configs/ablations/retina_r50_fpn_600_1x.py')
    leaf.write_text(f'_base_ = {base!r}\n'
                    'model = dict(bbox_head=dict(loss_cls=dict(gamma=1.0)))')
    resolved = resolve_settings(Config.fromfile(str(leaf)))
    row = BY_CONFIG['configs/ablations/retina_r50_fpn_600_1x.py']
    assert resolved['gamma'] == '1' != row['gamma']
    assert resolved['depth'] == row['depth']


def test_resolver_sees_a_changed_backbone(tmp_path):
    """The backbone columns bite: BN affine trained again, RGB input, and
    torchvision's weights each move a _caffe config off its row."""
    config = 'configs/retina_r50_fpn_1x_caffe.py'
    row = BY_CONFIG[config]
    leaf = tmp_path / 'leaf.py'
    leaf.write_text(
        f'_base_ = {osp.join(ROOT, config)!r}\n'
        'model = dict(\n'
        '    data_preprocessor=dict(bgr_to_rgb=True),\n'
        '    backbone=dict(style=\'pytorch\', norm_cfg=dict(\n'
        '        requires_grad=True), init_cfg=dict(\n'
        '            checkpoint=\'torchvision://resnet50\')))\n')
    resolved = resolve_settings(Config.fromfile(str(leaf)))
    assert (row['style'], row['bn'], row['channels']) == ('caffe', 'frozen',
                                                          'BGR')
    assert (resolved['style'], resolved['bn'],
            resolved['channels']) == ('pytorch', 'affine trained', 'RGB')
    assert resolved['weights'] == 'torchvision://resnet50' != row['weights']


# The paper's AP per cell, in the order of its tables (typed from the
# paper's text, independently of configs/paper_settings.csv).
PAPER_AP = {
    'Table 1a': ['0.0', '10.8', '30.2', '31.1', '30.8', '28.7', '25.1'],
    'Table 1b': ['31.1', '31.4', '31.9', '32.9', '33.7', '34.0', '32.2'],
    'Table 1c': ['30.3', '31.9', '31.8', '32.4', '34.2', '34.0', '33.8'],
    'Table 1d': ['31.1', '31.8', '30.6', '32.8', '31.0', '27.6', '31.1',
                 '28.3', '24.0', '36.0'],
    # Table 1e's cells, then the same grid on MSRA's caffe-style backbone
    'Table 1e': ['35.7', '30.5', '32.5', '34.3', '35.1', '31.9', '34.4',
                 '36.0', '37.1', '37.8', '30.5', '32.5', '34.3', '35.1',
                 '35.7', '31.9', '34.4', '36.0', '37.1', '37.8'],
    # R-101 (torchvision, MSRA caffe-style), ResNeXt-101-64x4d
    'Table 2': ['39.1', '39.1', '40.8'],
    'Table 3': ['34.0', '31.1', '33.8', '33.9'],
}


def test_table_is_well_formed():
    for row in ROWS:
        assert row['split'] in ('minival', 'test-dev'), row['config']
        assert row['paper_ap'] or row['note'], row['config']
    for table, expected in PAPER_AP.items():
        got = [r['paper_ap'] for r in ROWS if r['table'] == table]
        assert got == expected, table
    for row in ROWS:
        if row['table'] == 'Table 1e' or row['table'] == 'Table 2':
            assert row['split'] == 'test-dev', row
        elif row['table'].startswith(('Table 1', 'Table 3')):
            assert row['split'] == 'minival', row


def test_generated_commands_start():
    """Every command of the generated table parses with its script's own
    argparse, passes the test-dev name check and names a config that
    loads; no two configs train into one work dir. (13 test-dev commands
    used the config stem, which tools/test.py refuses.)"""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        import paper_table
    finally:
        sys.path.pop(0)
    assert paper_table.check_commands(ROWS) == []
    lines = paper_table.markdown_table(ROWS).splitlines()[2:]
    assert len(lines) == len(BY_CONFIG)
    test_dev = [line for line in lines if '--test-dev' in line]
    assert len(test_dev) == len(
        {r['config'] for r in ROWS if r['split'] == 'test-dev'})
    assert '--test-dev retina-r101-fpn-1-5x`' in ''.join(test_dev)
    assert '--test-dev retina-r101-fpn-1-5x-caffe`' in ''.join(test_dev)
    assert '--test-dev retina-x101-64x4d-fpn-1-5x`' in ''.join(test_dev)


def test_command_check_bites():
    from projects.focal_retina.utils.commands import check_command
    cfg = 'configs/retina_r50_fpn_1x.py'
    assert check_command(f'python tools/test.py {cfg} a.pth') == []
    bad = check_command(
        f'python tools/test.py {cfg} a.pth --test-dev retina_r50_fpn_1x')
    assert len(bad) == 1 and "'retina_r50_fpn_1x'" in bad[0]
    assert 'retina-r50-fpn-1x' in bad[0]
    assert 'does not exist' in check_command(
        'python tools/test.py configs/nope.py a.pth')[0]
    assert 'unrecognized arguments' in check_command(
        f'python tools/test.py {cfg} a.pth --no-such-flag')[0]
    assert check_command(f'bash tools/dist_train.sh {cfg} 8') == []
    assert check_command(
        f'bash tools/dist_test.sh {cfg} a.pth 8 --test-dev x_y')
    assert 'no such script' in check_command('python tools/nope.py')[0]


def test_readme_table_is_generated():
    out = subprocess.run([sys.executable, 'tools/paper_table.py', '--check'],
                         cwd=ROOT,
                         capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
