"""The analysis tools of tools/analysis/: their computations against the
paper's formulas and exact references (fast, in-process), and each CLI on
a few-iteration checkpoint of the demo model (slow, subprocesses on the
CPU: ``CUDA_VISIBLE_DEVICES=''``)."""
import csv
import importlib.util
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import ROOT

DEMO = 'configs/demo/retina_r18_fpn_shapes.py'


def load_tool(path: str):
    """A tool script as a module (tools/ is not a package)."""
    name = 'tool_' + osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, expect_rc=0) -> str:
    """Runs a tool on the CPU; returns stdout + stderr."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')
    }
    env['CUDA_VISIBLE_DEVICES'] = ''
    proc = subprocess.run([sys.executable, *args],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600,
                          env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == expect_rc, out[-4000:]
    return out


def data_options(root: str) -> list:
    """--cfg-options pointing the demo config at the tiny dataset."""
    opts = ['model.test_cfg.score_thr=0.0']
    for split in ('train', 'val', 'test'):
        opts += [
            f'{split}_dataloader.num_workers=0',
            f'{split}_dataloader.persistent_workers=False',
            f'{split}_dataloader.dataset.data_root={root}'
        ]
    for split in ('val', 'test'):
        opts.append(f'{split}_evaluator.ann_file={root}/annotations/val.json')
    return opts


def train_tiny(tiny_shapes: str, tmp_path_factory) -> str:
    """A work dir of 4 training iterations (validated at iteration 4) of
    the demo model; trained once per session (in the session's temporary
    folder), whichever test module asks first."""
    work = tmp_path_factory.getbasetemp() / 'tiny_retina'
    if not (work / 'iter_4.pth').is_file():
        run('tools/train.py', DEMO, '--work-dir', str(work), '--cfg-options',
            *data_options(tiny_shapes), 'train_cfg.max_iters=4',
            'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4',
            'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2')
    return str(work)


@pytest.fixture(scope='module')
def tiny_work(tiny_shapes, tmp_path_factory) -> str:
    return train_tiny(tiny_shapes, tmp_path_factory)


def png_size(path: str) -> tuple:
    assert path.endswith('.png') and osp.getsize(path) > 0
    img = cv2.imread(path)
    assert img is not None, path
    return img.shape[1], img.shape[0]  # width, height


# ---- Figures 1, 5, 6: the loss component against the paper's formulas ----


def fl_formula(pt: float, gamma: float) -> float:
    return -(1 - pt)**gamma * math.log(pt)  # eq. 4 (alpha off)


def test_figure1_curve_matches_the_paper_formula():
    tool = load_tool('tools/analysis/loss_curves.py')
    pts = np.array([0.9, 0.5, 0.1, 0.999])
    curves = tool.figure1_curves(pts, [0, 0.5, 1, 2, 5])
    for gamma, values in curves.items():
        expected = [fl_formula(p, gamma) for p in pts]
        np.testing.assert_allclose(values, expected, rtol=1e-12)
    # p_t = 0.9: CE 0.105, FL(gamma=2) 100x smaller (the paper's example)
    assert curves[2][0] == pytest.approx(0.01 * curves[0][0], rel=1e-12)


def test_figure5_6_match_appendix_formulas():
    tool = load_tool('tools/analysis/loss_curves.py')
    xt = np.array([-4.0, -1.0, 0.0, 0.5, 3.0])
    curves = tool.variant_curves(xt, grad=True)
    sig = 1 / (1 + np.exp(-xt))
    ce, ce_d = curves['CE']
    np.testing.assert_allclose(ce, -np.log(sig), rtol=1e-12)
    np.testing.assert_allclose(ce_d, sig - 1, rtol=1e-12)  # eq. 9, y = 1
    fl, fl_d = curves['FL, γ = 2']
    np.testing.assert_allclose(fl, (1 - sig)**2 * -np.log(sig), rtol=1e-12)
    np.testing.assert_allclose(  # eq. 10
        fl_d, (1 - sig)**2 * (2 * sig * np.log(sig) + sig - 1),
        rtol=1e-10)
    for label, gamma, beta in (('FL*, γ = 2, β = 1', 2, 1),
                               ('FL*, γ = 4, β = 0', 4, 0)):
        star = 1 / (1 + np.exp(-(gamma * xt + beta)))  # eq. 7
        loss, d = curves[label]
        np.testing.assert_allclose(loss, -np.log(star) / gamma, rtol=1e-10)
        np.testing.assert_allclose(d, star - 1, rtol=1e-10)  # eq. 11


@pytest.mark.slow
def test_loss_curves_cli(tmp_path):
    run('tools/analysis/loss_curves.py', '--out-dir', str(tmp_path), '--dpi',
        '50')
    for name in ('figure1_focal_loss', 'figure5_loss_vs_xt',
                 'figure6_derivatives'):
        assert png_size(str(tmp_path / f'{name}.png')) == (300, 225)
    with open(tmp_path / 'figure1_focal_loss.csv') as f:
        row = next(r for r in csv.DictReader(f) if float(r['p_t']) == 0.9)
    for gamma in (0, 0.5, 1, 2, 5):
        assert float(row[f'fl_gamma_{gamma:g}']) == pytest.approx(
            fl_formula(0.9, gamma), rel=1e-12)
    run('tools/analysis/loss_curves.py', '--figures', '5', '--format', 'svg',
        '--out-dir', str(tmp_path / 'svg'))
    assert open(
        tmp_path / 'svg' /
        'figure5_loss_vs_xt.svg').read(200).lstrip().startswith('<?xml')


# ---- Figure 4: the streaming CDF and the anchor assignment ----------------


def exact_cdf(values: np.ndarray):
    v = np.sort(values)
    return (np.arange(len(v) + 1) / len(v),
            np.concatenate([[0.0], np.cumsum(v) / v.sum()]))


def test_streaming_cdf_error_is_within_its_bound():
    tool = load_tool('tools/analysis/streaming_cdf.py')
    rng = np.random.default_rng(0)
    values = np.concatenate([
        np.exp(rng.normal(-8, 4, 200_000)),  # 1e-12 ... 1e1
        np.zeros(1000),  # underflowed losses
        np.full(10, 5.0)
    ])
    cdf = tool.StreamingCDF(bins_per_decade=20)
    for chunk in np.array_split(rng.permutation(values), 7):
        cdf.update(torch.from_numpy(chunk))
    x, y = cdf.curve()
    assert cdf.num_samples == len(values)
    assert x[0] == y[0] == 0 and x[-1] == pytest.approx(1, abs=1e-12)
    assert y[-1] == pytest.approx(1, abs=1e-12)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
    ex, ey = exact_cdf(values)
    # exact at the bin edges: y there is the exact CDF at that count
    idx = np.rint(x * len(values)).astype(int)
    np.testing.assert_allclose(y, ey[idx], atol=1e-12)
    # between edges: at most (r - 1) / 4 of the largest bin's loss share
    bound = (cdf.ratio - 1) / 4 * np.max(np.diff(y)) + 1e-12
    assert np.max(np.abs(np.interp(ex, x, y) - ey)) <= bound


def test_streaming_cdf_edge_cases():
    tool = load_tool('tools/analysis/streaming_cdf.py')
    empty = tool.StreamingCDF()
    assert empty.curve()[0].tolist() == [0.0]
    zeros = tool.StreamingCDF()
    zeros.update(torch.zeros(5))  # all-zero loss: a uniform CDF
    assert zeros.curve()[1].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match='finite and >= 0'):
        zeros.update(torch.tensor([float('nan')]))
    with pytest.raises(ValueError, match='lo < hi'):
        tool.StreamingCDF(lo=1.0, hi=0.5)


def test_split_losses_by_hand():
    """Two classes; anchors: positive (class 1), negative, ignored."""
    tool = load_tool('tools/analysis/loss_cdf.py')
    logits = torch.tensor([[0.3, 2.0], [-1.0, 0.5], [4.0, 4.0]])
    labels = torch.tensor([1, 2, 2])  # 2 = background
    weights = torch.tensor([1.0, 1.0, 0.0])  # the third is ignored
    sig = torch.sigmoid(logits.double())

    def fl(p_t):
        return -(1 - p_t)**2 * torch.log(p_t)

    pos, neg = tool.split_losses(logits, labels, weights, 2.0, None, 'anchor')
    torch.testing.assert_close(pos, (fl(1 - sig[0, 0]) + fl(sig[0, 1]))[None])
    torch.testing.assert_close(neg,
                               (fl(1 - sig[1, 0]) + fl(1 - sig[1, 1]))[None])
    pos, neg = tool.split_losses(logits, labels, weights, 2.0, None, 'element')
    torch.testing.assert_close(pos, fl(sig[0, 1])[None])
    torch.testing.assert_close(
        neg.sort().values,
        torch.stack([fl(1 - sig[0, 0]),
                     fl(1 - sig[1, 0]),
                     fl(1 - sig[1, 1])]).sort().values)


def test_anchor_targets_reproduce_the_training_loss(tiny_shapes):
    """Sum of the collected FL (gamma 2, alpha .25) over positives and
    negatives / #positives == the head's training loss_cls: the same
    assignment, ignored anchors excluded."""
    from mmdet.apis import init_detector
    from mmengine.config import Config
    from mmengine.runner import Runner
    tool = load_tool('tools/analysis/loss_cdf.py')
    cfg = Config.fromfile(osp.join(ROOT, DEMO))
    cfg.model.backbone.init_cfg = None
    cfg.val_dataloader.update(
        num_workers=0, persistent_workers=False, batch_size=2)
    cfg.val_dataloader.dataset.data_root = tiny_shapes
    model = init_detector(cfg, None, device='cpu')
    model.init_weights()
    model.eval()
    batch = next(iter(Runner.build_dataloader(cfg.val_dataloader)))
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        logits, labels, weights = tool.anchor_targets(model, data)
        pos, neg = tool.split_losses(logits, labels, weights, 2.0, 0.25,
                                     'element')
        loss = model.loss(data['inputs'], data['data_samples'])
    num_pos = len(pos)
    assert num_pos > 0 and (weights == 0).sum() > 0  # ignored anchors exist
    ours = (pos.sum() + neg.sum()) / num_pos
    torch.testing.assert_close(
        ours.float(), sum(loss['loss_cls']).float(), rtol=1e-5, atol=0)


@pytest.mark.slow
def test_loss_cdf_cli(tiny_work, tiny_shapes, tmp_path):
    out = str(tmp_path / 'cdf.png')
    log = run('tools/analysis/loss_cdf.py', DEMO,
              osp.join(tiny_work, 'iter_4.pth'), '--gammas', '0', '2', '--out',
              out, '--dpi', '50', '--cfg-options', *data_options(tiny_shapes))
    assert png_size(out) == (500, 210)
    assert 'hardest 20% hold' in log
    points = {}
    with open(tmp_path / 'cdf.csv') as f:
        for r in csv.DictReader(f):
            points.setdefault((r['set'], r['gamma']), []).append(
                (float(r['fraction']), float(r['cum_loss'])))
    assert set(points) == {(s, g)
                           for s in ('positive', 'negative')
                           for g in ('0', '2')}
    for xy in points.values():
        x, y = np.array(xy).T
        assert x[0] == y[0] == 0 and x[-1] == y[-1] == 1
        assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)


# ---- training curves, results table, speed --------------------------------


def test_series_take_the_iteration_of_a_validation(tmp_path):
    logs = load_tool('tools/analysis/logs.py')
    first = [
        dict(loss=2.0, time=1.0, iter=10, step=10),
        {
            'coco/bbox_mAP': 0.1,
            'time': 9.0,
            'step': 0
        },  # step = epoch
        dict(loss=1.5, time=1.0, iter=20, step=20)
    ]
    resumed = [dict(loss=1.4, time=1.0, iter=20, step=20)]
    for stamp, lines in (('20240101_000000', first), ('20240102_000000',
                                                      resumed)):
        folder = tmp_path / stamp / 'vis_data'
        folder.mkdir(parents=True)
        text = '\n'.join(map(json.dumps, lines)) + '\n{"torn": '
        (folder / 'scalars.json').write_text(text)
    series = logs.load_series(str(tmp_path))
    assert series['coco/bbox_mAP'] == {10: 0.1}
    assert series['loss'] == {10: 2.0, 20: 1.4}
    assert series['time'] == {10: 1.0, 20: 1.0}  # not the validation's
    assert logs.latest_metric(str(tmp_path),
                              'coco/bbox_mAP') == (0.1,
                                                   'validation at iter 10')


@pytest.mark.slow
def test_analyze_logs_cli(tiny_work, tmp_path):
    out = str(tmp_path / 'curves.png')
    log = run('tools/analysis/analyze_logs.py', tiny_work, tiny_work,
              '--legend', 'FL', 'again', '--keys', 'loss_cls', 'lr',
              'bbox_mAP', '--out', out, '--dpi', '50')
    assert png_size(out) == (630, 165)  # 3 panels of 4.2 x 3.3 in
    assert 's/iter' in log
    with open(tmp_path / 'curves.csv') as f:
        rows = list(csv.DictReader(f))
    assert {r['run'] for r in rows} == {'FL', 'again'}
    assert [
        r['iter'] for r in rows
        if r['key'] == 'coco/bbox_mAP' and r['run'] == 'FL'
    ] == ['4']
    bad = run(
        'tools/analysis/analyze_logs.py',
        tiny_work,
        '--keys',
        'nope',
        '--out',
        out,
        expect_rc=2)
    assert "--keys ['nope'] not logged" in bad


def fake_work_dir(src: str, dst, config: str, ap=None):
    """A copy of a work dir as if trained with ``config`` (its dumped
    config replaced) and, with ``ap``, tested by tools/test.py."""
    shutil.copytree(src, dst)
    os.remove(osp.join(dst, osp.basename(DEMO)))
    from mmengine.config import Config
    Config.fromfile(osp.join(ROOT, config)).dump(
        osp.join(dst, osp.basename(config)))
    if ap is not None:
        os.makedirs(osp.join(dst, '29990101_000000'))
        with open(
                osp.join(dst, '29990101_000000', '29990101_000000.json'),
                'w') as f:
            json.dump({'coco/bbox_mAP': ap, 'coco/bbox_mAP_50': 0.5}, f)


@pytest.mark.slow
def test_collect_results_feeds_paper_table(tiny_work, tmp_path):
    root = tmp_path / 'work_dirs'
    fake_work_dir(
        tiny_work, root / 'r50', 'configs/retina_r50_fpn_1x.py', ap=0.352)
    # the ablation default: also Table 1b, 1c, 1e (600 px) and 3 cells
    fake_work_dir(
        tiny_work,
        root / 'abl',
        'configs/ablations/retina_r50_fpn_600_1x.py',
        ap=0.341)
    shutil.copytree(tiny_work, root / 'demo')  # not in the paper table
    table, js = str(tmp_path / 'results.md'), str(tmp_path / 'results.json')
    run('tools/analysis/collect_results.py', '--work-root', str(root), '--out',
        table, '--json', js)
    text = open(table).read()
    assert ('| `configs/retina_r50_fpn_1x.py` | 35.7 (Table 1e: R-50, 800 '
            'px, test-dev) | 35.2 | -0.5 |') in text
    for cell in ('Sec. 5.1: ablation default (FL gamma 2, alpha .25), '
                 'minival', 'Table 1b: gamma = 2, alpha = 0.25, minival',
                 'Table 1e: R-50, 600 px, test-dev'):
        delta = '+0.1' if 'minival' in cell else '-0.2'
        assert (f'| `configs/ablations/retina_r50_fpn_600_1x.py` | 3'
                f'{"4.3" if "test-dev" in cell else "4.0"} ({cell}) | 34.1 '
                f'| {delta} |') in text, cell
    assert '| `retina_r18_fpn_shapes.py` (demo) | — |' in text
    with open(js) as f:
        assert json.load(f) == {
            'configs/retina_r50_fpn_1x.py': 35.2,
            'configs/ablations/retina_r50_fpn_600_1x.py': 34.1
        }
    printed = run('tools/paper_table.py', '--results', js)
    assert ('| `configs/retina_r50_fpn_1x.py` | Table 1e: R-50, 800 px — '
            '35.7 (test-dev) | 35.2 |') in printed


def test_set_scale_keeps_the_ratio():
    from mmengine.config import Config
    tool = load_tool('tools/analysis/benchmark_speed.py')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/retina_r50_fpn_1x.py'))
    tool.set_scale(cfg, 600)
    resize = [
        s for s in cfg.test_dataloader.dataset.pipeline
        if s['type'] == 'Resize'
    ][0]
    assert resize['scale'] == (1000, 600)  # 800 x 1333 -> 600 x 1000


@pytest.mark.slow
def test_benchmark_speed_cli(tiny_work, tmp_path):
    results = tmp_path / 'ap.json'
    results.write_text(json.dumps({f'{DEMO}@96': 20.0, f'{DEMO}@128': 25.0}))
    out, js = str(tmp_path / 'fig2.png'), str(tmp_path / 'speed.json')
    log = run('tools/analysis/benchmark_speed.py', DEMO, '--checkpoint',
              osp.join(tiny_work, 'iter_4.pth'), '--scales', '96', '128',
              '--repeat', '3', '--warmup', '1', '--device', 'cpu', '--results',
              str(results), '--out', out, '--json', js, '--dpi', '50')
    assert 'device: cpu' in log and 'torch threads:' in log
    assert 'dtype: float32' in log
    assert png_size(out) == (350, 250)
    with open(js) as f:
        rows = json.load(f)['rows']
    assert [r['scale'] for r in rows] == [96, 128]
    assert [r['input_hw'] for r in rows] == [[72, 96], [96, 128]]
    for r in rows:
        assert r['runs'] == 3 and r['ms_median'] > 0
        assert r['ms_p25'] <= r['ms_median'] <= r['ms_p75']
    assert 0 < rows[0]['gflops'] < rows[1]['gflops']
