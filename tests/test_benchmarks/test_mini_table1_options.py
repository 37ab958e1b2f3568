"""mini Table 1's new options, without training: what --regime and
--optimizer hand to tools/train.py, the fl_g0 alias, and the claim
verdicts on hand-made summaries."""
import importlib.util
import os.path as osp

import pytest

from tests.conftest import ROOT


def load_benchmark():
    path = osp.join(ROOT, 'benchmarks', 'mini_table1.py')
    spec = importlib.util.spec_from_file_location('mini_table1_opts', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dense_adamw_is_unchanged():
    bench = load_benchmark()
    args = bench.parse_args([])
    assert args.regime == 'dense' and args.optimizer == 'adamw'
    assert args.work_root.endswith(osp.join('mini_table1', 'runs'))
    assert args.data == osp.join(ROOT, 'data', 'shapes')
    assert args.methods == list(bench.METHODS)
    opts = bench.common_options(args, 'D', 0)
    assert not any(o.startswith('optim_wrapper') for o in opts)
    assert 'default_hooks.logger.interval=20' in opts
    assert bench.REGIMES['dense'][0] == bench.DEMO


def test_sparse_sgd_options():
    bench = load_benchmark()
    args = bench.parse_args(['--regime', 'sparse', '--optimizer', 'sgd'])
    assert args.work_root.endswith('runs_sparse_sgd')
    assert args.data == osp.join(ROOT, 'data', 'shapes_sparse')
    assert args.methods == [
        'ce_noprior', 'ce_a05', 'ce_a075', 'fl_g1', 'fl_g2', 'fl_g5', 'ohem13',
        'flstar', 'dr'
    ]
    opts = bench.common_options(args, 'D', 1)
    # the paper's lr 0.01 for 16 images, at 8 images per iteration
    for option in ('optim_wrapper.optimizer._delete_=True',
                   'optim_wrapper.optimizer.type=SGD',
                   'optim_wrapper.optimizer.lr=0.005',
                   'optim_wrapper.optimizer.momentum=0.9',
                   'optim_wrapper.optimizer.weight_decay=0.0001',
                   'optim_wrapper.clip_grad=None',
                   'default_hooks.logger.interval=1',
                   'log_processor.window_size=1', 'randomness.seed=1'):
        assert option in opts
    assert 'default_hooks.logger.interval=20' not in opts
    assert bench.REGIMES['sparse'][0].endswith(
        'retina_r18_fpn_shapes_sparse.py')


def test_fl_g0_names_the_alpha_075_run():
    bench = load_benchmark()
    args = bench.parse_args(['--methods', 'fl_g0', 'ce_a075', 'fl_g2'])
    assert args.methods == ['ce_a075', 'fl_g2']
    assert bench.METHODS['ce_a075'][1] == [
        'model.bbox_head.loss_cls.gamma=0.0',
        'model.bbox_head.loss_cls.alpha=0.75'
    ]


def s(ap, spread, status='ok'):
    return dict(
        AP=ap,
        AP50=ap,
        AP75=ap,
        spread=spread,
        status=[status],
        AP_per_seed=[],
        seeds=[0, 1])


@pytest.mark.parametrize(
    'kind,a,b,noise,verdict',
    [
        ('>', 30.0, 27.0, 2.0, 'holds'),
        ('>', 30.0, 29.0, 2.0, 'within spread (not resolved)'),
        ('>', 27.0, 30.0, 2.0, 'does not hold'),
        ('>=', 30.0, 29.0, 2.0, 'holds (within spread)'),
        ('>=', 29.0, 30.0, 2.0, 'holds (within spread)'),
        ('>=', 30.0, 27.5, 2.0, 'holds'),
        ('>=', 27.0, 30.0, 2.0, 'does not hold'),
        ('~', 30.0, 28.5, 2.0, 'holds'),
        ('~', 30.0, 27.5, 2.0, 'does not hold'),
        ('~', 30.0, 29.5, None, 'holds'),  # 1 AP without a spread
    ])
def test_compare(kind, a, b, noise, verdict):
    assert load_benchmark().compare(kind, a, b, noise) == verdict


def test_claims_on_a_hand_made_table():
    bench = load_benchmark()
    summary = dict(
        ce_noprior=s(0.0, 0.0, 'diverged'),
        ce_a05=s(20.0, 1.0),
        ce_a075=s(22.0, 1.0),
        fl_g2=s(25.0, 1.5),
        fl_g1=s(24.0, 1.0),
        fl_g5=s(20.0, 1.0),
        ohem13=s(10.0, 1.0),
        flstar=s(24.0, 0.5),
        dr=s(23.0, 1.0))
    got = {
        c['claim'].split(' (')[0]: c['verdict']
        for c in bench.orderings(summary)
    }
    assert got == {
        'no-prior CE diverges': 'holds',
        'no-prior CE trails CE with the prior': 'holds',
        'FL gamma 2 > alpha-CE': 'holds',  # 25 - 22 = 3 > 1.5
        # 25 vs 24 within 1.5; 25 vs 20 by more
        'FL gamma 2 >= gamma 1 and gamma 5': 'holds (within spread)',
        'FL > OHEM': 'holds',
        'FL* ~ FL': 'holds',  # 1.0 <= 1.5
        'DR >= FL': 'does not hold',  # 23 - 25 = -2 < -1.5
    }


def test_side_by_side_columns():
    bench = load_benchmark()
    a = dict(summary=dict(fl_g2=s(25.0, 1.0), flstar=s(25.5, 1.0)))
    b = dict(summary=dict(fl_g2=s(10.0, 1.0), flstar=s(14.0, 1.0)))
    lines = bench.side_by_side({'dense': a, 'sparse': b})
    assert '| flstar | 25.5 (25.5), 1.0 | 14.0 (14.0), 1.0 |' in lines
    (row, ) = [x for x in lines if x.startswith('| FL* ~ FL |')]
    assert 'holds: fl_g2 25.0 vs flstar 25.5' in row
    assert 'does not hold: fl_g2 10.0 vs flstar 14.0' in row
