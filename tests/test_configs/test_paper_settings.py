"""Every paper config resolves to the settings of its row of
``configs/paper_settings.csv``, every config has a row and every row a
config, and the README's reproduction table is the one generated from it.

The table is typed from the paper (Tables 1a-1e, 2, 3, Sec. 5.1) and the DR
loss's public settings; it is the expectation, the configs are under test.
"""
import csv
import glob
import io
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from projects.focal_retina.utils.paper_settings import (SETTINGS, TABLE,
                                                        load_table,
                                                        resolve_settings)
from tests.conftest import ROOT

# Configs that are not experiments of the paper.
NOT_PAPER = ('configs/demo/', 'configs/own_data/')
ROWS = load_table()
BY_CONFIG = {row['config']: row for row in ROWS}


def paper_configs():
    paths = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    rel = (osp.relpath(p, ROOT) for p in paths)
    return sorted(p for p in rel
                  if '_base_' not in p and not p.startswith(NOT_PAPER))


def test_every_config_has_a_row_and_every_row_a_config():
    configs = set(paper_configs())
    assert len(BY_CONFIG) == len(ROWS), 'a config has two rows'
    missing_rows = sorted(configs - set(BY_CONFIG))
    missing_configs = sorted(set(BY_CONFIG) - configs)
    assert not missing_rows, f'configs without a row: {missing_rows}'
    assert not missing_configs, f'rows without a config: {missing_configs}'


def test_table_covers_the_paper():
    """Row counts per table as the paper has them."""
    count = {}
    for row in ROWS:
        count[row['table']] = count.get(row['table'], 0) + 1
    assert count['Table 1a'] == 7 and count['Table 1b'] == 7
    assert count['Table 1c'] == 7 and count['Table 1d'] == 10
    assert count['Table 1e'] == 11  # 10 cells + the R-50 1x model
    assert count['Table 2'] == 1 and count['Table 3'] == 3
    assert count.get('DR loss', 0) == 2


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


def test_table_is_well_formed():
    with open(TABLE, newline='') as f:
        raw = f.read()
    assert list(csv.DictReader(io.StringIO(raw))) == ROWS
    for row in ROWS:
        assert row['split'] in ('minival', 'test-dev'), row['config']
        assert row['paper_ap'] or row['note'], row['config']


def test_readme_table_is_generated():
    out = subprocess.run([sys.executable, 'tools/paper_table.py', '--check'],
                         cwd=ROOT,
                         capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
