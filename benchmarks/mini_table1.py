"""Mini Table 1: the paper's loss orderings, measured at small scale.

Every method is the demo RetinaNet of ``configs/demo/retina_r18_fpn_shapes.py``
(ResNet-18 from scratch, 128-channel FPN, 2-conv GN towers) trained by
``tools/train.py`` with one fixed budget -- the same iterations, seeds, data,
batch (8) and optimizer for every method -- and evaluated with COCO AP by the
config's validation at the end of training, in one of two regimes
(``--regime``) of the synthetic shapes of ``tools/make_shapes.py``:

* ``dense`` (default): 600 train / 100 val images of 256 px with 6-14
  objects of 14-48 px: ~12k anchors per image against ~60 positive ones,
  an imbalance far milder than the paper's.
* ``sparse``: ``--preset sparse``, 600 / 100 images of 384 px with 1-4
  objects of 14-32 px, fed at 384 px
  (``configs/demo/retina_r18_fpn_shapes_sparse.py``): ~28k anchors per image
  against ~20 positive ones, more than 1000 negatives per positive. Every
  iteration is logged (for the loss curves).

The benchmark measures and prints that imbalance (``benchmarks/imbalance.py``:
anchors, positive anchors and negatives per positive at the model's input)
for each dataset it uses, beside the paper's COCO scale. Each method is a
list of ``--cfg-options`` overrides on the regime's config (printed and
saved):

=============  ==========================================================
ce_noprior     CE (gamma 0, alpha .5) with the last cls bias 0, no prior
ce_a05         CE with the prior pi = .01, alpha .5 (Table 1a / Sec. 5.1)
ce_a075        alpha-balanced CE, alpha .75 (Table 1a / 1b's first row;
               ``fl_g0`` on the command line names the same run)
fl_g2          FL gamma 2, alpha .25 (the paper's default, Table 1b)
fl_g1, fl_g5   FL gamma 1 and 5, alpha .25 (Table 1b)
flstar         FL* gamma 2, beta 1 (Table 3; alpha .25 as its config)
ohem           one-stage OHEM on CE, batch 128, nms .5 (Table 1d's best)
ohem13         OHEM 1:3, batch 128, nms .5 (Table 1d)
dr             DR loss (public code's settings) with the prior pi = .5
=============  ==========================================================

DR uses our paper head otherwise (IoU 0.5 / 0.4, box coder, box loss and
score threshold of the demo config), so that only the classification loss
and its prior differ from FL; ``configs/dr_loss/`` also changes those to
the DR code's.

Optimizer (``--optimizer``): ``adamw`` (default) is the demo config's AdamW
(lr 1e-3, wd 0.05, gradient-norm clip 10). ``sgd`` is the paper's: SGD with
momentum 0.9, weight decay 1e-4, no clipping, lr 0.01 scaled to the batch
(0.01 x batch / 16). Both keep the demo's GroupNorm towers (from scratch,
the demo does not train in a few hundred iterations without them) and its
schedule: a linear warm-up from lr / 10 over 10% of the run and lr / 10 at
76% and 92%. ``--amp`` (bfloat16 autocast) is used where a probe of the
model finds it faster than float32 (``--amp auto``, tools/train.py's).

A run stopped by the NaN guard (``NonFiniteGuardHook``) counts as
diverged: AP 0, the paper's "fails". The table gives AP, AP50 and AP75 in
percent (mean over ``--seeds``, each seed's AP and the spread max - min)
beside the paper's COCO AP of the same setting; then each of the paper's
claims is checked against the measured APs. A claim "holds" when the gap
is larger than the largest seed spread of the methods compared; "within
spread" otherwise; with one seed the spread is unknown and "~" uses a
tolerance of 1 AP. ``--compare OTHER.json`` (the JSON of another run, e.g.
``benchmarks/results/mini_table1_dense.json``, the dense regime's measured
table) puts its methods and claims beside this run's, and with both
``ce_noprior`` and ``ce_a05`` measured the first 50 iterations of their
classification loss are drawn (``prior_loss_curves.png`` in ``--out``).

Each run writes ``run.json`` into its work dir; a later invocation with
the same command reuses it (``--force`` retrains), so an interrupted
benchmark resumes.

Usage: python benchmarks/mini_table1.py [--regime dense|sparse]
       [--optimizer adamw|sgd] [--iters 180] [--seeds 0 1]
       [--methods fl_g2 ohem ...] [--amp auto|on|off] [--data DIR]
       [--work-root DIR] [--out DIR] [--compare JSON ...] [--force]
       [--quick]
``--quick``: 16 train / 8 val images of 128 px (sparse: 160 px, 1-3
objects), batch 2, 8 iterations, score threshold 0 (an untrained model
scores below 0.05), 3 methods, one seed: a check that it all runs, not a
measurement.
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import imbalance  # noqa: E402

DEMO = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py')
SPARSE = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes_sparse.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
HEAD = 'model.bbox_head'
LOSS = f'{HEAD}.loss_cls'
SAMPLER = 'model.train_cfg.sampler'


def fl(gamma: float, alpha: Optional[float]) -> List[str]:
    """Overrides for FocalFamilyLoss(gamma, alpha): FL, or CE at gamma 0."""
    return [f'{LOSS}.gamma={gamma}', f'{LOSS}.alpha={alpha}']


def ohem(pos_fraction: Optional[float]) -> List[str]:
    """CE (gamma 0, no alpha) scoring examples for OneStageOHEMSampler,
    batch 128, nms .5 (configs/ablations/table1d_ohem/)."""
    return fl(0.0, None) + [
        f'{SAMPLER}.type=OneStageOHEMSampler', f'{SAMPLER}.batch_size=128',
        f'{SAMPLER}.nms_iou=0.5', f'{SAMPLER}.pos_fraction={pos_fraction}'
    ]


# name: (description, overrides, config of the paper row in
# configs/paper_settings.csv)
METHODS: Dict[str, Tuple[str, List[str], str]] = {
    'ce_noprior':
    ('CE, no prior (bias 0)', fl(0.0, 0.5) + [f'{HEAD}.prior_prob=None'],
     'configs/ablations/prior/'
     'retina_r50_fpn_600_1x_ce-noprior.py'),
    'ce_a05': ('CE, prior .01, alpha .5', fl(0.0, 0.5),
               'configs/ablations/table1a_alpha_ce/'
               'retina_r50_fpn_600_1x_ce-a05.py'),
    'ce_a075': ('CE, prior .01, alpha .75 (= FL gamma 0, fl_g0)',
                fl(0.0, 0.75), 'configs/ablations/table1a_alpha_ce/'
                'retina_r50_fpn_600_1x_ce-a075.py'),
    'fl_g2': ('FL gamma 2, alpha .25', fl(2.0, 0.25),
              'configs/ablations/retina_r50_fpn_600_1x.py'),
    'fl_g1': ('FL gamma 1, alpha .25', fl(1.0, 0.25),
              'configs/ablations/table1b_gamma_alpha/'
              'retina_r50_fpn_600_1x_fl-g1-a025.py'),
    'fl_g5': ('FL gamma 5, alpha .25', fl(5.0, 0.25),
              'configs/ablations/table1b_gamma_alpha/'
              'retina_r50_fpn_600_1x_fl-g5-a025.py'),
    'flstar': ('FL* gamma 2, beta 1',
               fl(2.0, 0.25) + [f'{LOSS}.star=True', f'{LOSS}.star_beta=1.0'],
               'configs/ablations/table3_fl_star/'
               'retina_r50_fpn_600_1x_flstar-g2-b1.py'),
    'ohem':
    ('OHEM, batch 128, nms .5', ohem(None), 'configs/ablations/table1d_ohem/'
     'retina_r101_fpn_600_1x_ohem-b128-nms05.py'),
    'ohem13': ('OHEM 1:3, batch 128, nms .5', ohem(0.25),
               'configs/ablations/table1d_ohem/'
               'retina_r101_fpn_600_1x_ohem13-b128-nms05.py'),
    'dr': ('DR loss, prior .5', [
        f'{LOSS}._delete_=True', f'{LOSS}.type=DRLoss',
        f'{LOSS}.use_sigmoid=True', f'{LOSS}.grouping=per_batch',
        f'{HEAD}.prior_prob=0.5'
    ], 'configs/dr_loss/retina_r50_fpn_1x_dr.py'),
}
ALIASES = {'fl_g0': 'ce_a075'}  # Table 1b's gamma 0 row is Table 1a's .75
QUICK_METHODS = ('fl_g2', 'ohem', 'dr')
SPARSE_METHODS = ('ce_noprior', 'ce_a05', 'ce_a075', 'fl_g1', 'fl_g2', 'fl_g5',
                  'ohem13', 'flstar', 'dr')
# regime: (config, shapes preset, default data folder, default methods)
REGIMES: Dict[str, Tuple[str, str, str, Sequence[str]]] = {
    'dense': (DEMO, 'dense', 'data/shapes', tuple(METHODS)),
    'sparse': (SPARSE, 'sparse', 'data/shapes_sparse', SPARSE_METHODS),
}
OPTIMIZERS = ('adamw', 'sgd')
SGD_BASE_LR = 0.01  # the paper's, for 16 images per iteration
# The default budget: 10 methods x 2 seeds at ~0.7 s per iteration (bf16,
# batch 8, 2 cores) + ~30 s of start-up and validation per run: ~52 min.
DEFAULT_ITERS = 180
CURVE_ITERS = 50  # the no-prior / prior loss curves: first 50 iterations
ONE_SEED_TOL = 1.0  # AP points: "~" with an unknown spread
METRICS = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'),
           ('AP75', 'coco/bbox_mAP_75'))
VERDICTS = ('holds', 'holds (within spread)', 'within spread (not resolved)',
            'does not hold', 'not measured')

# The paper cell of a method whose config reproduces several cells (one
# config per model in configs/paper_settings.csv); others: the first row.
PAPER_TABLE = {
    'ce_a05': 'Sec. 5.1',
    'ce_a075': 'Table 1a',
    'fl_g2': 'Table 1b'
}


def paper_rows() -> Dict[str, Dict[str, str]]:
    """{method: its row of configs/paper_settings.csv}."""
    from projects.focal_retina.utils.paper_settings import load_table
    rows: Dict[str, List[Dict[str, str]]] = {}
    for row in load_table():
        rows.setdefault(row['config'], []).append(row)
    out = {}
    for name, (_, _, cfg) in METHODS.items():
        cells = rows[cfg]
        table = PAPER_TABLE.get(name)
        out[name] = next((c for c in cells if c['table'] == table), cells[0])
    return out


def paper_cell(row: Dict[str, str], name: str = '') -> str:
    """``'34.0 (Table 1b, R-50, minival)'`` or the row's note."""
    depth = f'R-{row["depth"]}'
    if not row['paper_ap']:
        return f'{row["note"]} ({row["table"]}, {depth})'
    return f'{row["paper_ap"]} ({row["table"]}, {depth}, {row["split"]})'


def cpu_flags() -> str:
    """The flags line of /proc/cpuinfo ('' where there is none)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return line
    except OSError:
        pass
    return ''


def amp_auto(config: str, cache: Optional[str] = None) -> bool:
    """``--amp auto``: the probe of ``tools/train.py --amp auto`` (a
    training step of the regime's model in float32 and under bf16
    autocast, cached per machine, or in ``cache``), not a CPU flag: with
    AVX-512 BF16 but no AMX bf16 can be the slower one. Prints its choice
    and the two timings."""
    from mmengine.device import get_device

    from projects.focal_retina.engine.amp_probe import amp_decision
    from projects.focal_retina.engine.cli import read_config
    decision = amp_decision(
        read_config(config).model, get_device(), path=cache)
    print(decision.line, flush=True)
    return decision.use_amp


def quick_spec(regime: str):
    """The tiny dataset of ``--quick`` in ``regime``."""
    from projects.focal_retina.datasets import ShapesSpec
    if regime == 'sparse':
        return ShapesSpec(
            seed=0,
            num_train=16,
            num_val=8,
            img_size=160,
            min_objects=1,
            max_objects=3,
            min_size=10,
            max_size=24,
            clutter=5)
    return ShapesSpec(
        seed=0,
        num_train=16,
        num_val=8,
        img_size=128,
        min_objects=3,
        max_objects=6,
        min_size=10,
        max_size=32,
        clutter=4)


def make_data(path: str, quick: bool, regime: str = 'dense') -> str:
    """The shapes dataset of ``regime`` (the preset: seed 0, 600 / 100
    images), or the tiny one of ``--quick``; generated once, reused."""
    from projects.focal_retina.datasets import generate_shapes_dataset
    from projects.focal_retina.datasets.synthetic_shapes import shapes_preset
    spec = quick_spec(regime) if quick else shapes_preset(regime)
    generate_shapes_dataset(path, spec)
    return path


def sgd_lr(batch: int) -> float:
    """The paper's lr 0.01 for 16 images, scaled linearly to ``batch``."""
    return SGD_BASE_LR * batch / 16


def optimizer_options(optimizer: str, batch: int) -> List[str]:
    """Overrides of the demo's AdamW for ``--optimizer`` (none for adamw):
    the paper's SGD, momentum 0.9, weight decay 1e-4, no clipping."""
    if optimizer == 'adamw':
        return []
    return [
        'optim_wrapper.optimizer._delete_=True',
        'optim_wrapper.optimizer.type=SGD',
        f'optim_wrapper.optimizer.lr={sgd_lr(batch):g}',
        'optim_wrapper.optimizer.momentum=0.9',
        'optim_wrapper.optimizer.weight_decay=0.0001',
        'optim_wrapper.clip_grad=None'
    ]


def batch_size(args) -> int:
    return 2 if args.quick else 8


def common_options(args, data: str, seed: int) -> List[str]:
    """The budget, data and optimizer every method shares."""
    iters = args.iters
    opts = [
        f'train_cfg.max_iters={iters}', f'randomness.seed={seed}',
        'default_hooks.logger.interval=20'
    ]
    for split in ('train', 'val', 'test'):
        opts.append(f'{split}_dataloader.dataset.data_root={data}')
    for split in ('val', 'test'):
        opts.append(f'{split}_evaluator.ann_file={data}/annotations/val.json')
    if args.quick:
        opts += [
            'train_dataloader.batch_size=2', 'model.test_cfg.score_thr=0.0',
            'default_hooks.logger.interval=4'
        ]
        for split in ('train', 'val', 'test'):
            opts += [
                f'{split}_dataloader.num_workers=0',
                f'{split}_dataloader.persistent_workers=False'
            ]
    if getattr(args, 'val_images', None):
        # the first N validation images (COCO AP over the images predicted)
        opts += [
            f'{split}_dataloader.dataset.indices={args.val_images}'
            for split in ('val', 'test')
        ]
    if getattr(args, 'regime', 'dense') == 'sparse':
        # every iteration's own loss, for the first-50-iteration curves
        opts = [o for o in opts if not o.startswith('default_hooks.logger')]
        opts += [
            'default_hooks.logger.interval=1', 'log_processor.window_size=1'
        ]
    opts += optimizer_options(
        getattr(args, 'optimizer', 'adamw'), batch_size(args))
    return opts


def last_metrics(work_dir: str) -> Optional[Dict[str, float]]:
    """The last COCO record of the run's scalars.json, if any."""
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    metrics = None
    for path in files[-1:]:
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'coco/bbox_mAP' in record:
                    metrics = {k: record[key] for k, key in METRICS}
    return metrics


def _normalised(command: List[str]) -> List[str]:
    """``command`` with its ``--work-dir`` made absolute: the same run
    started from a relative and an absolute ``--work-root`` is reused."""
    out = list(command)
    for i, arg in enumerate(out[:-1]):
        if arg == '--work-dir':
            out[i + 1] = osp.abspath(osp.join(ROOT, out[i + 1]))
    return out


def run_method(args, name: str, seed: int, data: str, amp: bool) -> Dict:
    """Trains and evaluates one method with one seed (a subprocess of
    tools/train.py); reuses a finished run of the same command."""
    work_dir = osp.join(args.work_root, f'{name}_s{seed}')
    options = common_options(args, data, seed) + METHODS[name][1]
    config = REGIMES[getattr(args, 'regime', 'dense')][0]
    cmd = [sys.executable, TRAIN, config, '--work-dir', work_dir]
    cmd += ['--amp'] if amp else []
    cmd += ['--cfg-options'] + options
    record_path = osp.join(work_dir, 'run.json')
    if osp.isfile(record_path) and not args.force:
        with open(record_path) as f:
            record = json.load(f)
        if _normalised(record.get('command', [])) == _normalised(cmd[1:]):
            record['reused'] = True
            return record
    os.makedirs(work_dir, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')
    }
    start = time.time()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - start
    with open(osp.join(work_dir, 'train_output.log'), 'w') as f:
        f.write(proc.stdout + proc.stderr)
    metrics = last_metrics(work_dir) if proc.returncode == 0 else None
    errors = [line for line in proc.stderr.splitlines() if ': error: ' in line]
    status, message = 'ok', ''
    if proc.returncode != 0:
        message = (errors or proc.stderr.strip().splitlines()
                   or ['no output'])[-1][-300:]
        # NonFiniteGuardHook stopped it: "non-finite loss_cls ... at ..."
        status = 'diverged' if 'non-finite' in message else 'failed'
    elif metrics is None:
        status, message = 'failed', 'no coco/bbox_mAP in scalars.json'
    if status == 'diverged':
        metrics = {k: 0.0 for k, _ in METRICS}  # the paper's "fails"
    record = dict(
        method=name,
        seed=seed,
        command=cmd[1:],
        status=status,
        message=message,
        metrics=metrics,
        wall_s=wall,
        work_dir=work_dir)
    with open(record_path, 'w') as f:
        json.dump(record, f, indent=1)
    return record


def summarise(runs: List[Dict]) -> Dict:
    """Mean over seeds (percent), each seed's AP and the spread."""
    done = [r for r in runs if r['metrics'] is not None]
    out = dict(
        seeds=[r['seed'] for r in done],
        status=sorted({r['status']
                       for r in runs}),
        AP_per_seed=[100 * r['metrics']['AP'] for r in done])
    for key, _ in METRICS:
        values = [100 * r['metrics'][key] for r in done]
        out[key] = statistics.mean(values) if values else None
    aps = out['AP_per_seed']
    out['spread'] = max(aps) - min(aps) if len(aps) >= 2 else None
    return out


def _noise(summary: Dict, names: List[str]) -> Optional[float]:
    spreads = [summary[n]['spread'] for n in names]
    if any(s is None for s in spreads):
        return None
    return max(spreads)


def _best(summary: Dict, names: List[str]) -> Optional[str]:
    have = [n for n in names if summary.get(n, {}).get('AP') is not None]
    return max(have, key=lambda n: summary[n]['AP']) if have else None


def compare(kind: str, a: float, b: float, noise: Optional[float]) -> str:
    """Verdict on ``a kind b`` (kind: '>', '>=' or '~'), AP points.

    '>' and '>=' hold when ``a`` exceeds ``b`` by more than the spread
    ``noise``; a gap within the spread is 'within spread (not resolved)'
    for '>' and 'holds (within spread)' for '>='; '~' holds when the gap is
    within the spread (1 AP when the spread is unknown)."""
    diff = a - b
    if kind == '~':
        tol = ONE_SEED_TOL if noise is None else noise
        return 'holds' if abs(diff) <= tol else 'does not hold'
    tol = 0.0 if noise is None else noise
    if diff > tol:
        return 'holds'
    if diff < -tol:
        return 'does not hold'
    if kind == '>':
        return 'within spread (not resolved)'
    return 'holds (within spread)'


def _worst(verdicts: List[str]) -> str:
    order = [
        'holds', 'holds (within spread)', 'within spread (not resolved)',
        'does not hold'
    ]
    return max(verdicts, key=order.index)


def orderings(summary: Dict) -> List[Dict]:
    """Each of the paper's claims, checked on the measured APs."""
    out = []

    def add(claim, paper, verdict, detail):
        out.append(
            dict(claim=claim, paper=paper, verdict=verdict, detail=detail))

    def ap(name):
        return summary[name]['AP']

    def have(*names):
        return all(summary.get(n, {}).get('AP') is not None for n in names)

    def spread_text(noise):
        return 'unknown (1 seed)' if noise is None else f'{noise:.1f}'

    claim = 'no-prior CE diverges (the paper: "fails")'
    paper = 'diverges (Sec. 5.1) vs 30.2 with the prior'
    if have('ce_noprior'):
        status = summary['ce_noprior']['status']
        add(claim, paper, 'holds' if 'diverged' in status else 'does not hold',
            f'ce_noprior {ap("ce_noprior"):.1f} '
            f'({", ".join(status)})')
    else:
        add(claim, paper, 'not measured', 'needs ce_noprior')
    claim = 'no-prior CE trails CE with the prior (alpha .5)'
    if have('ce_noprior', 'ce_a05'):
        noise = _noise(summary, ['ce_noprior', 'ce_a05'])
        half = ' (< half)' if ap('ce_noprior') < 0.5 * ap('ce_a05') else ''
        add(
            claim, paper, compare('>', ap('ce_a05'), ap('ce_noprior'), noise),
            f'no prior {ap("ce_noprior"):.1f}{half} vs prior '
            f'{ap("ce_a05"):.1f}; spread {spread_text(noise)}')
    else:
        add(claim, paper, 'not measured', 'needs ce_noprior, ce_a05')
    pairs = [
        ('FL gamma 2 > alpha-CE (best alpha)', '34.0 vs 31.1 (alpha .75)', '>',
         ['ce_a05', 'ce_a075']),
        ('FL gamma 2 >= gamma 1 and gamma 5', '34.0 vs 33.7, 32.2 '
         '(Table 1b)', '>=', ['fl_g1', 'fl_g5']),
        ('FL > OHEM (best OHEM measured)', '36.0 vs 32.8 (R-101, Table 1d; '
         'OHEM 1:3 31.1)', '>', ['ohem', 'ohem13']),
        ('FL* ~ FL', '33.8 vs 34.0 (Table 3)', '~', ['flstar']),
        ('DR >= FL', '37.4 (DR, R-50 1x 800 px) vs 35.7 (FL, Table 1e)', '>=',
         ['dr']),
    ]
    for claim, paper, kind, others in pairs:
        measured = [n for n in others if have(n)]
        if not have('fl_g2') or not measured:
            add(claim, paper, 'not measured',
                f'needs fl_g2 and {", ".join(others)}')
            continue
        if kind == '>=' and len(others) > 1:  # FL beats each of them
            verdicts = [
                compare(kind, ap('fl_g2'), ap(n),
                        _noise(summary, ['fl_g2', n])) for n in measured
            ]
            noise = _noise(summary, ['fl_g2'] + measured)
            detail = ', '.join(f'{n} {ap(n):.1f}' for n in measured)
            add(
                claim, paper, _worst(verdicts),
                f'fl_g2 {ap("fl_g2"):.1f} vs {detail}; spread '
                f'{spread_text(noise)}')
            continue
        best = _best(summary, measured)
        a, b = (ap(best), ap('fl_g2')) if kind in ('~', '>=') else \
            (ap('fl_g2'), ap(best))
        noise = _noise(summary, ['fl_g2', best])
        add(
            claim, paper, compare(kind, a, b, noise),
            f'fl_g2 {ap("fl_g2"):.1f} vs {best} {ap(best):.1f}; spread '
            f'{spread_text(noise)}')
    return out


def fmt(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.1f}'


def torch_threads() -> Tuple[str, int]:
    import torch
    return torch.__version__, torch.get_num_threads()


def machine_line() -> str:
    """``'2-core AVX-512 CPU, 2 threads, torch 2.13.0+cpu'`` (or the GPU
    tools/train.py would train on)."""
    import torch  # tools/train.py trains on a visible GPU
    flags = cpu_flags().split()
    cpu = f'{os.cpu_count()}-core ' \
        f'{"AVX-512 " if "avx512f" in flags else ""}CPU'
    if torch.cuda.is_available():
        cpu += f', GPU {torch.cuda.get_device_name()}'
    version, threads = torch_threads()
    plural = '' if threads == 1 else 's'
    return f'{cpu}, {threads} thread{plural}, torch {version}'


def setting_line(args, amp: bool) -> str:
    """The schedule every method shares, for the table header."""
    batch = batch_size(args)
    if args.optimizer == 'sgd':
        opt = (f'SGD lr {sgd_lr(batch):g} (0.01 x {batch}/16), momentum '
               '0.9, wd 1e-4, no clipping')
    else:
        opt = 'AdamW lr 1e-3, wd 0.05, clip 10'
    val = f'first {args.val_images} val images' if args.val_images else \
        'all val images'
    return (f'{args.iters} iterations x {batch} images, {val}, {opt}, '
            'warm-up '
            '10% from lr/10, lr/10 at 76% and 92%; GN towers kept (the '
            f'demo config); {"bf16 autocast" if amp else "fp32"}')


def methods_table(summary: Dict) -> List[str]:
    papers = paper_rows()
    lines = [
        '| method | setting | AP | AP50 | AP75 | AP per seed | spread | '
        'status | paper COCO AP |', '|---|---|---|---|---|---|---|---|---|'
    ]
    for name, s in summary.items():
        per_seed = ' '.join(f'{v:.1f}' for v in s['AP_per_seed']) or 'n/a'
        lines.append(f'| {name} | {METHODS[name][0]} | {fmt(s["AP"])} | '
                     f'{fmt(s["AP50"])} | {fmt(s["AP75"])} | {per_seed} | '
                     f'{fmt(s["spread"])} | {", ".join(s["status"])} | '
                     f'{paper_cell(papers[name], name)} |')
    return lines


def claims_table(checks: List[Dict]) -> List[str]:
    lines = [
        '| paper\'s claim | paper | verdict | measured |', '|---|---|---|---|'
    ]
    for c in checks:
        lines.append(f'| {c["claim"]} | {c["paper"]} | {c["verdict"]} | '
                     f'{c["detail"]} |')
    return lines


def side_by_side(runs: Dict[str, Dict]) -> List[str]:
    """Methods and claims of several runs ({label: record with 'summary'}),
    one column per run; the claims are checked again here from each
    run's summary, so that every column uses the same criteria."""
    labels = list(runs)
    methods = []
    for record in runs.values():
        methods += [m for m in record['summary'] if m not in methods]
    lines = [
        '| method | ' + ' | '.join(f'{lb} AP (AP50), spread'
                                   for lb in labels) + ' |',
        '|---|' + '---|' * len(labels)
    ]
    for m in methods:
        cells = []
        for record in runs.values():
            s = record['summary'].get(m)
            cells.append('not run' if s is None or s['AP'] is None else
                         f'{s["AP"]:.1f} ({fmt(s["AP50"])}), '
                         f'{fmt(s["spread"])}'
                         f'{" diverged" if "diverged" in s["status"] else ""}')
        lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
    checks = {lb: orderings(r['summary']) for lb, r in runs.items()}
    lines += [
        '', '| paper\'s claim | paper | ' + ' | '.join(labels) + ' |',
        '|---|---|' + '---|' * len(labels)
    ]
    for i, c in enumerate(checks[labels[0]]):
        cells = [
            f'{checks[lb][i]["verdict"]}: {checks[lb][i]["detail"]}'
            for lb in labels
        ]
        lines.append(f'| {c["claim"]} | {c["paper"]} | ' + ' | '.join(cells) +
                     ' |')
    return lines


def report(args,
           summary: Dict,
           checks: List[Dict],
           machine: str,
           amp: bool,
           total_s: float,
           imbalance_text: str = '',
           others: Optional[Dict[str, Dict]] = None,
           this_label: str = '') -> str:
    lines = [
        '## Mini Table 1: the paper\'s orderings on the '
        f'{args.regime}-shapes data ({args.optimizer})', '',
        f'- {time.strftime("%Y-%m-%d")}; {machine}; {setting_line(args, amp)}'
        f'; seeds {args.seeds}; total {total_s / 60:.1f} min'
        f'{"; --quick smoke run (not a measurement)" if args.quick else ""}',
        '- AP in percent (COCO AP@[.5:.95] on the val split), mean over '
        'seeds; spread = max - min of AP over seeds', ''
    ]
    lines += methods_table(summary)
    if imbalance_text:
        lines += [
            '', '### Imbalance at the model\'s input (training split)', '',
            imbalance_text
        ]
    lines += ['', '### The paper\'s claims', '']
    lines += claims_table(checks)
    if others:
        runs = dict(others)
        runs[this_label] = dict(summary=summary)
        lines += ['', '### Side by side', '']
        for label, record in others.items():
            if record.get('header'):
                lines.append(f'- {label}: {record["header"]}')
        lines += [f'- {this_label}: this run', '']
        lines += side_by_side(runs)
    return '\n'.join(lines)


def run_label(regime: str, optimizer: str) -> str:
    return regime if optimizer == 'adamw' else f'{regime} ({optimizer})'


def load_other(path: str) -> Tuple[str, Dict]:
    """(label, record) of another run's mini_table1.json."""
    with open(path) as f:
        record = json.load(f)
    a = record.get('args', {})
    label = run_label(a.get('regime', 'dense'), a.get('optimizer', 'adamw'))
    return label, record


def prior_curves(runs: Dict[str, List[Dict]],
                 path: str,
                 iters: int = CURVE_ITERS) -> Optional[str]:
    """Draws loss_cls (and grad_norm where logged) of ce_noprior against
    ce_a05 over the first ``iters`` iterations, every seed; writes the
    figure and a CSV of its points. None without both methods."""
    if not runs.get('ce_noprior') or not runs.get('ce_a05'):
        return None
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
    from figure_io import beside, new_figure, save_figure, write_csv
    from logs import load_series
    keys = ['loss_cls', 'grad_norm']
    series = {}
    for name in ('ce_noprior', 'ce_a05'):
        for rec in runs[name]:
            s = load_series(rec['work_dir'])
            series[f'{name} seed {rec["seed"]}'] = {
                k: {
                    i: v
                    for i, v in s.get(k, {}).items() if i <= iters
                }
                for k in keys
            }
    keys = [k for k in keys if any(v[k] for v in series.values())]
    if not keys:
        return None
    last = max(max(v[k], default=0) for v in series.values() for k in keys)
    fig, axes = new_figure(5.2 * len(keys), 4.0, 100, ncols=len(keys))
    axes = [axes] if len(keys) == 1 else list(axes)
    rows = []
    for ax, key in zip(axes, keys):
        for label, s in series.items():
            its = sorted(s[key])
            ax.plot(
                its, [s[key][i] for i in its],
                label=label,
                linestyle='-' if label.startswith('ce_noprior') else '--')
            rows += [(label, key, i, s[key][i]) for i in its]
        ax.set(
            yscale='log',
            xlabel='iteration',
            ylabel=key,
            xlim=(0, iters),
            title=f'{key}, first {min(iters, last)} iterations')
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    write_csv(beside(path, '.csv'), ['run', 'key', 'iter', 'value'], rows)
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--regime',
        choices=list(REGIMES),
        default='dense',
        help='shapes data: dense (6-14 objects, 256 px) or sparse (1-4 '
        'objects, 384 px, > 1000 negatives per positive anchor)')
    parser.add_argument(
        '--optimizer',
        choices=OPTIMIZERS,
        default='adamw',
        help='the demo\'s AdamW or the paper\'s SGD (lr scaled to the '
        'batch)')
    parser.add_argument(
        '--iters',
        type=int,
        default=None,
        help=f'training iterations of every run (default {DEFAULT_ITERS})')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=list(METHODS) + list(ALIASES),
        default=None,
        help='default: all (dense) or the 9 of the sparse regime')
    parser.add_argument(
        '--amp',
        choices=['auto', 'on', 'off'],
        default='auto',
        help='bf16 autocast (auto: where a probe of the model finds it '
        'faster, as tools/train.py --amp auto)')
    parser.add_argument(
        '--data', default=None, help='shapes dataset (made if missing)')
    parser.add_argument('--work-root', default=None)
    parser.add_argument(
        '--out', default=None, help='directory for mini_table1.md / .json')
    parser.add_argument(
        '--compare',
        nargs='+',
        default=[],
        help='mini_table1.json of other runs to put side by side')
    parser.add_argument(
        '--val-images',
        type=int,
        default=None,
        help='evaluate on the first N validation images only (default all)')
    parser.add_argument(
        '--no-imbalance',
        action='store_true',
        help='skip measuring the anchors and positives of the data')
    parser.add_argument(
        '--force', action='store_true', help='retrain finished runs')
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    config, _, data_dir, methods = REGIMES[args.regime]
    if args.quick:
        args.iters = args.iters or 8
        args.seeds = [args.seeds[0]]
        args.methods = args.methods or list(QUICK_METHODS)
    args.iters = args.iters or DEFAULT_ITERS
    args.methods = list(
        dict.fromkeys(ALIASES.get(m, m) for m in args.methods or methods))
    base = args.out or osp.join(ROOT, 'work_dirs', 'mini_table1')
    suffix = '_quick' if args.quick else ''
    # the dense AdamW runs keep their folder (finished runs are reused)
    kind = '' if (args.regime, args.optimizer) == ('dense', 'adamw') else \
        f'_{args.regime}_{args.optimizer}'
    # absolute: tools/train.py runs in the repository root
    args.work_root = osp.abspath(
        args.work_root or osp.join(base, 'runs' + kind + suffix))
    default_data = osp.join(base, f'data_quick_{args.regime}') \
        if args.quick else osp.join(ROOT, data_dir)
    args.data = args.data or default_data
    if args.iters < 1:
        parser.error('--iters must be at least 1')
    for path in args.compare:
        if not osp.isfile(path):
            parser.error(f'--compare {path}: no such file')
    return args


def measure_imbalance(args, data: str) -> Tuple[str, Dict]:
    """The imbalance table of this run's data (and, with ``--compare`` of
    a dense run, of the dense preset's data, made if missing)."""
    datasets = {f'{args.regime} shapes': (REGIMES[args.regime][0], data)}
    for path in args.compare:
        regime = load_other(path)[1].get('args', {}).get('regime', 'dense')
        if regime != args.regime and not args.quick:
            config, _, folder, _ = REGIMES[regime]
            root = make_data(osp.join(ROOT, folder), False, regime)
            datasets[f'{regime} shapes'] = (config, root)
    measured = {
        name: imbalance.measure(config, root, 'train')
        for name, (config, root) in datasets.items()
    }
    return imbalance.table(measured), measured


def main(argv=None) -> None:
    args = parse_args(argv)
    # --quick (the tests) keeps its probe out of the machine's cache
    cache = osp.join(args.work_root, 'amp_probe.json') if args.quick else None
    amp = args.amp == 'on' or (args.amp == 'auto'
                               and amp_auto(REGIMES[args.regime][0], cache))
    data = make_data(osp.abspath(args.data), args.quick, args.regime)
    print(
        f'mini Table 1 ({args.regime}, {args.optimizer}): '
        f'{len(args.methods)} methods x seeds {args.seeds}, {args.iters} '
        f'iterations, {"bf16" if amp else "fp32"}, data {data}',
        flush=True)
    imbalance_text, measured = '', {}
    if not args.no_imbalance:
        imbalance_text, measured = measure_imbalance(args, data)
        print(imbalance_text, flush=True)
    start = time.time()
    runs = {name: [] for name in args.methods}
    for seed in args.seeds:  # all methods of a seed, then the next seed
        for name in args.methods:
            rec = run_method(args, name, seed, data, amp)
            runs[name].append(rec)
            m = rec['metrics']
            ap = 'n/a' if m is None else f'{100 * m["AP"]:.1f}'
            print(
                f'  {name} seed {seed}: {rec["status"]}, AP {ap}, '
                f'{rec["wall_s"]:.0f} s'
                f'{" (reused)" if rec.get("reused") else ""}'
                f'{"; " + rec["message"] if rec["message"] else ""}',
                flush=True)
    summary = {name: summarise(runs[name]) for name in args.methods}
    checks = orderings(summary)
    others = dict(load_other(p) for p in args.compare)
    text = report(args, summary, checks, machine_line(), amp,
                  time.time() - start, imbalance_text, others,
                  run_label(args.regime, args.optimizer))
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        curves = prior_curves(runs, osp.join(args.out,
                                             'prior_loss_curves.png'))
        with open(osp.join(args.out, 'mini_table1.md'), 'w') as f:
            f.write(text + '\n')
        record = dict(
            args=dict(
                regime=args.regime,
                optimizer=args.optimizer,
                iters=args.iters,
                seeds=args.seeds,
                methods=args.methods,
                amp=amp,
                quick=args.quick,
                data=data),
            header=f'{time.strftime("%Y-%m-%d")}; {machine_line()}; '
            f'{setting_line(args, amp)}; seeds {args.seeds}',
            machine=machine_line(),
            overrides={n: METHODS[n][1]
                       for n in args.methods},
            imbalance=measured,
            summary=summary,
            orderings=checks,
            loss_curves=curves,
            runs=runs)
        with open(osp.join(args.out, 'mini_table1.json'), 'w') as f:
            json.dump(record, f, indent=1)
        print(f'wrote {args.out}/mini_table1.md and mini_table1.json')


if __name__ == '__main__':
    main()
