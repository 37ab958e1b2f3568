"""mini Table 1 without training: the defaults the issue asks for (all
methods, >= 3 seeds, >= 500 iterations), the configs each method and
optimizer hand to the model, the run plan (with the divergence check under
the paper's SGD) and the claims' verdicts on hand-made summaries."""
import importlib.util
import json
import os.path as osp

import pytest

from tests.conftest import ROOT

ALL = [
    'ce_a025', 'ce_a05', 'ce_a075', 'fl_g05', 'fl_g1', 'fl_g2', 'fl_g5',
    'flstar', 'ohem', 'ohem13', 'dr', 'ce_noprior'
]


def load():
    path = osp.join(ROOT, 'benchmarks', 'mini_table1.py')
    spec = importlib.util.spec_from_file_location('mini_table1_opts', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from benchmarks.mini_table1_parts import claims, methods, regimes
    return module, claims, methods, regimes


def test_defaults_meet_the_budget_of_the_issue():
    bench, _, _, regimes = load()
    args = bench.parse_args([])
    assert args.regime == 'tiny' and args.optimizer == 'adamw'
    assert args.seeds == [0, 1, 2]
    assert args.methods == ALL
    assert (args.jobs, args.threads) == (2, 1)
    assert args.work_root.endswith(osp.join('mini_table1', 'tiny'))
    tiny = regimes.REGIMES['tiny']
    assert tiny.iters == 500 and tiny.eval_points() == [125, 250, 375, 500]


def test_fl_g0_is_the_alpha_075_run_and_quick():
    bench, _, methods, _ = load()
    args = bench.parse_args(['--methods', 'fl_g0', 'ce_a075', 'fl_g2'])
    assert args.methods == ['ce_a075', 'fl_g2']
    quick = bench.parse_args(['--quick'])
    assert quick.regime == 'quick' and quick.seeds == [0]
    assert quick.methods == list(methods.QUICK_METHODS)


def test_gamma_sweep_uses_the_papers_alpha_per_gamma():
    """Table 1b: gamma 0 / .5 / 1 / 2 / 5 with alpha .75 / .5 / .25 / .25 /
    .25."""
    _, _, methods, _ = load()
    sweep = sorted((m.gamma, m.overrides['model.bbox_head.loss_cls.alpha'])
                   for m in methods.METHODS.values() if m.gamma is not None)
    assert sweep == [(0.0, 0.75), (0.5, 0.5), (1.0, 0.25), (2.0, 0.25),
                     (5.0, 0.25)]


@pytest.mark.parametrize('name,expected', [
    ('ce_noprior', dict(gamma=0.0, alpha=0.5, prior=None)),
    ('fl_g05', dict(gamma=0.5, alpha=0.5, prior=0.01)),
    ('flstar', dict(gamma=2.0, alpha=0.25, prior=0.01, star=True)),
    ('ohem13', dict(gamma=0.0, alpha=None, prior=0.01)),
])
def test_method_configs(name, expected):
    _, _, methods, regimes = load()
    cfg = regimes.model_config(regimes.REGIMES['tiny'])
    cfg.merge_from_dict(methods.METHODS[name].overrides)
    head = cfg.model.bbox_head
    assert head.loss_cls.type == 'FocalFamilyLoss'
    assert head.loss_cls.gamma == expected['gamma']
    assert head.loss_cls.alpha == expected['alpha']
    assert head.prior_prob == expected['prior']
    assert head.loss_cls.get('star', False) == expected.get('star', False)
    # the regime's narrow model and the demo's anchors and assigner
    assert cfg.model.backbone.base_channels == 16
    assert cfg.model.neck.in_channels == [16, 32, 64, 128]
    assert head.feat_channels == 32 and head.norm_cfg.num_groups == 8
    assert head.anchor_generator.octave_base_scale == 2
    if name == 'ohem13':
        sampler = cfg.model.train_cfg.sampler
        assert (sampler.type, sampler.batch_size, sampler.nms_iou,
                sampler.pos_fraction) == ('OneStageOHEMSampler', 128, 0.5,
                                          0.25)


def test_dr_replaces_the_loss():
    _, _, methods, regimes = load()
    cfg = regimes.model_config(regimes.REGIMES['tiny'])
    cfg.merge_from_dict(methods.METHODS['dr'].overrides)
    loss = cfg.model.bbox_head.loss_cls
    assert loss.type == 'DRLoss' and 'gamma' not in loss
    assert cfg.model.bbox_head.prior_prob == 0.5


def test_sgd_is_the_papers():
    """lr 0.01 for 16 images scaled to the batch of 8, momentum .9, wd
    1e-4, no clipping; AdamW keeps the demo's clip 10."""
    _, _, _, regimes = load()
    tiny = regimes.REGIMES['tiny']
    sgd = regimes.model_config(tiny, 'sgd').optim_wrapper
    assert dict(sgd.optimizer) == dict(
        type='SGD', lr=0.005, momentum=0.9, weight_decay=0.0001)
    assert sgd.clip_grad is None
    adamw = regimes.model_config(tiny).optim_wrapper
    assert adamw.optimizer.type == 'AdamW'
    assert adamw.clip_grad.max_norm == 10


def test_plan_has_every_run_and_the_sgd_curves(tmp_path):
    bench, _, _, regimes = load()
    from benchmarks.mini_table1_parts import cli
    args = bench.parse_args(['--work-root', str(tmp_path)])
    jobs = cli.plan(args, regimes.REGIMES['tiny'], 'D')
    validated = [(j['name'], j['seed']) for j in jobs if j['validate']]
    assert len(validated) == 12 * 3 and len(set(validated)) == 36
    assert validated[:12] == [(n, 0) for n in ALL]  # seed-major
    assert not any(j['validate'] for j in jobs[:12])  # the curves first
    curves = [(j['label'], j['name'], j['seed'], j['optimizer'], j['iters'],
               j['regime'].gn_groups) for j in jobs if not j['validate']]
    # the paper's SGD on the regime's GN towers, then on towers without GN
    assert curves == [(label, n, s, 'sgd', 100, gn)
                      for label, gn in (('sgd', 8), ('sgd_nogn', 0))
                      for s in (0, 1, 2) for n in ('ce_noprior', 'ce_a05')]
    assert len({j['work_dir'] for j in jobs}) == len(jobs)
    assert len({json.dumps(j['key']) for j in jobs}) == len(jobs)


def test_paper_towers_have_no_groupnorm():
    from dataclasses import replace
    _, _, _, regimes = load()
    tiny = regimes.REGIMES['tiny']
    assert regimes.model_config(tiny).model.bbox_head.norm_cfg.type == 'GN'
    cfg = regimes.model_config(replace(tiny, gn_groups=0), 'sgd')
    assert cfg.model.bbox_head.norm_cfg is None


def s(*aps):
    """A summary with these per-seed APs."""
    return dict(
        AP=sum(aps) / len(aps),
        min=min(aps),
        max=max(aps),
        spread=max(aps) - min(aps),
        AP_per_seed=list(aps),
        status=['ok'])


@pytest.mark.parametrize('a,b,verdict', [
    (s(30, 31, 32), s(27, 28, 29.9), 'holds'),
    (s(30, 31, 32), s(29, 30.5, 33), 'undecided'),
    (s(20, 21, 22), s(27, 28, 29), 'fails'),
])
def test_greater(a, b, verdict):
    assert load()[1].greater(a, b) == verdict


def test_one_seed_decides_nothing():
    _, claims, _, _ = load()
    assert claims.greater(s(30), s(10, 11, 12)) == 'undecided'
    assert claims.close(s(30, 31), s(30)) == 'undecided'


@pytest.mark.parametrize(
    'a,b,verdict',
    [
        (s(30, 31, 32), s(30.5, 31.5, 32.5), 'holds'),  # overlap, 0.5 apart
        (s(28, 31, 34), s(31, 32.5, 34), 'undecided'),  # overlap, 1.5 apart
        (s(30, 31, 32), s(33, 34, 35), 'fails'),  # no overlap
    ])
def test_close(a, b, verdict):
    assert load()[1].close(a, b) == verdict


def test_claims_on_a_hand_made_table():
    _, claims, _, _ = load()
    summary = dict(
        ce_a025=s(1, 2, 3),
        ce_a05=s(10, 11, 12),
        ce_a075=s(12, 13, 14),
        fl_g05=s(13, 14, 15),
        fl_g1=s(15, 16, 17),
        fl_g2=s(16, 17, 18),
        fl_g5=s(14, 14.5, 15),
        flstar=s(16.5, 17, 17.5),
        ohem=s(5, 6, 7),
        ohem13=s(4, 5, 6),
        dr=s(15, 17, 19),
        ce_noprior=s(0, 0, 0))

    def run(status, loss):
        return dict(
            status=status,
            seed=0,
            message='non-finite loss at '
            'iteration 3',
            curves=dict(loss=loss))

    nan, ok = run('diverged', [5.0, 80.0, None]), run('ok', [5.0, 4.0, 1.0])
    curves = dict(
        # diverges without the prior, not with it
        sgd=dict(ce_noprior=[nan] * 3, ce_a05=[ok] * 3),
        # diverges with the prior too: not the prior's doing
        sgd_nogn=dict(ce_noprior=[nan] * 3, ce_a05=[nan] * 3),
        # one seed of three rises above 10x its first loss
        adamw=dict(
            ce_noprior=[ok] * 2 + [run('ok', [5.0, 60.0, 1.0])],
            ce_a05=[ok] * 3))
    got = {c['key']: c['verdict'] for c in claims.judge_all(summary, curves)}
    assert got == {
        'fl_beats_alpha_ce': 'holds',  # 16 > 14
        'fl_beats_ohem': 'holds',
        'flstar_matches_fl': 'holds',
        # worst in [.5, 5] fl_g05 13-15 against 90 % of 17 = 15.3
        'gamma_robust': 'fails',
        'gamma_best_near_2': 'holds',  # fl_g2 16-18 vs fl_g5 14-15
        'alpha_ce_075_beats_025': 'holds',
        'noprior_diverges_sgd': 'holds',
        'noprior_diverges_sgd_nogn': 'fails',
        'noprior_diverges_default': 'undecided',
        'prior_beats_noprior': 'holds',
        'dr_beats_fl': 'undecided',
    }


def test_robust_and_near_2_hold():
    _, claims, _, _ = load()
    summary = dict(
        ce_a075=s(10, 11, 12),
        fl_g05=s(15.5, 16.5, 17.5),
        fl_g1=s(16, 17, 18),
        fl_g2=s(17, 17.5, 18),
        fl_g5=s(15.8, 16, 16.2))
    # worst fl_g5 15.8-16.2 against 90 % of fl_g2's 17.5 = 15.75
    assert claims.gamma_robust(summary, {})[0] == 'holds'
    # fl_g2 17-18 against fl_g05 15.5-17.5: the ranges overlap
    assert claims.gamma_near_2(summary, {})[0] == 'undecided'
    summary['fl_g05'] = s(12, 13, 14)
    summary['fl_g5'] = s(12, 13, 14)
    assert claims.gamma_near_2(summary, {})[0] == 'holds'
