"""Mini Table 1: the paper's loss orderings, measured at small scale.

Every method is the demo RetinaNet of ``configs/demo/retina_r18_fpn_shapes.py``
(ResNet-18 from scratch, 128-channel FPN, 2-conv GN towers, 256 px) on the
synthetic dense-shapes data of ``tools/make_shapes.py`` (600 train / 100 val
images, 6-14 objects of 14-48 px each: ~10^4 anchors per image against ~10
objects, the imbalance the paper is about), trained by ``tools/train.py``
with one fixed budget -- the same iterations, seeds, data, batch (8) and
optimizer for every method -- and evaluated with COCO AP by the config's
validation at the end of training. Each method is a list of
``--cfg-options`` overrides on the demo config (printed and saved):

=============  ==========================================================
ce_noprior     CE (gamma 0, alpha .5) with the last cls bias 0, no prior
ce_a05         CE with the prior pi = .01, alpha .5 (Table 1a / Sec. 5.1)
ce_a075        alpha-balanced CE, alpha .75 (Table 1a / 1b's first row)
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

Optimizer: the demo config's AdamW (lr 1e-3, wd 0.05, clip 10) with a
linear warm-up over 10% and lr / 10 at 76% and 92% of the run, not the
paper's SGD: from scratch in a few hundred iterations SGD (lr 0.02,
clipped) reached only AP50 0.50 after 600 iterations on this data, AdamW
with GN towers 0.97 (README, "The main job"). ``--amp`` (bfloat16
autocast) is used where the CPU has native bf16 (``--amp auto``).

A run stopped by the NaN guard (``NonFiniteGuardHook``) counts as
diverged: AP 0, the paper's "fails". The table gives AP, AP50 and AP75 in
percent (mean over ``--seeds``, each seed's AP and the spread max - min)
beside the paper's COCO AP of the same setting; then each of the paper's
orderings is checked against the measured APs. "Within spread" means the
gap is no larger than the largest seed spread of the methods compared;
with one seed the spread is unknown and "~" uses a tolerance of 1 AP.

Each run writes ``run.json`` into its work dir; a later invocation with
the same command reuses it (``--force`` retrains), so an interrupted
benchmark resumes.

Usage: python benchmarks/mini_table1.py [--iters 180] [--seeds 0 1]
       [--methods fl_g2 ohem ...] [--amp auto|on|off] [--data DIR]
       [--work-root DIR] [--out DIR] [--force] [--quick]
``--quick``: 16 train / 8 val images of 128 px (resized to 256 by the
demo pipeline), batch 2, 8 iterations, score threshold 0 (an untrained
model scores below 0.05), 3 methods, one seed: a check that it all runs,
not a measurement.
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
from typing import Dict, List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.machine import cpu_model  # noqa: E402

DEMO = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py')
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
               'configs/ablations/prior/retina_r50_fpn_600_1x_ce-prior.py'),
    'ce_a075': ('CE, prior .01, alpha .75', fl(0.0, 0.75),
                'configs/ablations/table1a_alpha_ce/'
                'retina_r50_fpn_600_1x_ce-a075.py'),
    'fl_g2': ('FL gamma 2, alpha .25', fl(2.0, 0.25),
              'configs/ablations/table1b_gamma_alpha/'
              'retina_r50_fpn_600_1x_fl-g2-a025.py'),
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
QUICK_METHODS = ('fl_g2', 'ohem', 'dr')
# The default budget: 10 methods x 2 seeds at ~0.7 s per iteration (bf16,
# batch 8, 2 cores) + ~30 s of start-up and validation per run: ~52 min.
DEFAULT_ITERS = 180
ONE_SEED_TOL = 1.0  # AP points: "~" with an unknown spread
METRICS = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'),
           ('AP75', 'coco/bbox_mAP_75'))


def paper_rows() -> Dict[str, Dict[str, str]]:
    """{method: its row of configs/paper_settings.csv}."""
    from projects.focal_retina.utils.paper_settings import load_table
    rows = {row['config']: row for row in load_table()}
    return {name: rows[cfg] for name, (_, _, cfg) in METHODS.items()}


def paper_cell(row: Dict[str, str]) -> str:
    """``'34.0 (Table 1b, R-50, minival)'`` or the row's note."""
    depth = f'R-{row["depth"]}'
    if not row['paper_ap']:
        return f'{row["note"]} ({row["table"]}, {depth})'
    return f'{row["paper_ap"]} ({row["table"]}, {depth}, {row["split"]})'


def cpu_has_bf16() -> bool:
    """Native bf16 (AVX-512 BF16 / AMX), as tools/run_main_job.sh checks."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def make_data(path: str, quick: bool) -> str:
    """The shapes dataset (the main job's: seed 0, 600 / 100 images of
    256 px), or the tiny one of ``--quick``; generated once, reused."""
    from projects.focal_retina.datasets import (ShapesSpec,
                                                generate_shapes_dataset)
    spec = ShapesSpec()
    if quick:
        spec = ShapesSpec(
            seed=0,
            num_train=16,
            num_val=8,
            img_size=128,
            min_objects=3,
            max_objects=6,
            min_size=10,
            max_size=32,
            clutter=4)
    generate_shapes_dataset(path, spec)
    return path


def common_options(args, data: str, seed: int) -> List[str]:
    """The budget and data every method shares."""
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
    cmd = [sys.executable, TRAIN, DEMO, '--work-dir', work_dir]
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
    """Verdict on ``a kind b`` (kind: '>', '>=' or '~'), AP points."""
    diff = a - b
    if kind == '~':
        tol = ONE_SEED_TOL if noise is None else noise
        return 'holds' if abs(diff) <= tol else 'does not hold'
    tol = 0.0 if noise is None else noise
    if kind == '>':
        if diff > tol:
            return 'holds'
        return 'within spread (not resolved)' if diff >= -tol else \
            'does not hold'
    if diff >= 0:
        return 'holds'
    return 'holds (within spread)' if diff >= -tol else 'does not hold'


def orderings(summary: Dict) -> List[Dict]:
    """Each of the paper's orderings, checked on the measured APs."""
    out = []

    def add(claim, paper, verdict, detail):
        out.append(
            dict(claim=claim, paper=paper, verdict=verdict, detail=detail))

    def ap(name):
        return summary[name]['AP']

    def have(*names):
        return all(summary.get(n, {}).get('AP') is not None for n in names)

    claim = 'no-prior CE fails or is far worse (< half the AP of CE with ' \
        'the prior, alpha .5)'
    paper = 'diverges (Sec. 5.1) vs 30.2'
    if have('ce_noprior', 'ce_a05'):
        diverged = 'diverged' in summary['ce_noprior']['status']
        far = ap('ce_noprior') < 0.5 * ap('ce_a05')
        add(
            claim, paper, 'holds' if diverged or far else 'does not hold',
            f'no prior {ap("ce_noprior"):.1f}'
            f'{" (diverged)" if diverged else ""} vs prior '
            f'{ap("ce_a05"):.1f}')
    else:
        add(claim, paper, 'not measured', 'needs ce_noprior, ce_a05')
    pairs = [
        ('FL > alpha-CE (best alpha)', '34.0 vs 31.1 (alpha .75)', '>',
         ['ce_a05', 'ce_a075']),
        ('FL > OHEM (best OHEM)', '36.0 vs 32.8 (R-101, Table 1d)', '>',
         ['ohem', 'ohem13']),
        ('FL* ~ FL', '33.8 vs 34.0 (Table 3)', '~', ['flstar']),
        ('DR >= FL', '37.4 (DR, R-50 1x 800 px) vs 35.7 (FL, Table 1e)', '>=',
         ['dr']),
        ('FL gamma 2 >= gamma 1 and gamma 5', '34.0 vs 33.7, 32.2 '
         '(Table 1b)', '>=', ['fl_g1', 'fl_g5']),
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
            worst = max(
                verdicts,
                key=['holds', 'holds (within spread)', 'does not hold'].index)
            detail = ', '.join(f'{n} {ap(n):.1f}' for n in measured)
            add(claim, paper, worst, f'fl_g2 {ap("fl_g2"):.1f} vs {detail}')
            continue
        best = _best(summary, measured)
        a, b = (ap(best), ap('fl_g2')) if kind in ('~', '>=') else \
            (ap('fl_g2'), ap(best))
        noise = _noise(summary, ['fl_g2', best])
        add(
            claim, paper, compare(kind, a, b, noise),
            f'fl_g2 {ap("fl_g2"):.1f} vs {best} {ap(best):.1f}; spread '
            f'{"unknown (1 seed)" if noise is None else f"{noise:.1f}"}')
    return out


def fmt(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.1f}'


def report(args, summary: Dict, checks: List[Dict], machine: str, amp: bool,
           total_s: float) -> str:
    papers = paper_rows()
    lines = [
        '## Mini Table 1: the paper\'s orderings on the dense-shapes data', '',
        f'- {machine}; {time.strftime("%Y-%m-%d")}; '
        f'{"bf16 autocast" if amp else "fp32"}; '
        f'{args.iters} iterations x {8 if not args.quick else 2} images '
        f'(AdamW, demo config), seeds {args.seeds}; total '
        f'{total_s / 60:.1f} min'
        f'{"; --quick smoke run (not a measurement)" if args.quick else ""}',
        '- AP in percent (COCO AP@[.5:.95] on the val split), mean over '
        'seeds; spread = max - min of AP over seeds', '',
        '| method | setting | AP | AP50 | AP75 | AP per seed | spread | '
        'status | paper COCO AP |', '|---|---|---|---|---|---|---|---|---|'
    ]
    for name, s in summary.items():
        per_seed = ' '.join(f'{v:.1f}' for v in s['AP_per_seed']) or 'n/a'
        lines.append(f'| {name} | {METHODS[name][0]} | {fmt(s["AP"])} | '
                     f'{fmt(s["AP50"])} | {fmt(s["AP75"])} | {per_seed} | '
                     f'{fmt(s["spread"])} | {", ".join(s["status"])} | '
                     f'{paper_cell(papers[name])} |')
    lines += [
        '', '### Orderings', '', '| paper\'s ordering | paper | here | '
        'measured |', '|---|---|---|---|'
    ]
    for c in checks:
        lines.append(f'| {c["claim"]} | {c["paper"]} | {c["verdict"]} | '
                     f'{c["detail"]} |')
    return '\n'.join(lines)


def machine_line() -> str:
    cpu = cpu_model()
    import torch  # tools/train.py trains on a visible GPU
    where = f'GPU {torch.cuda.get_device_name()}' \
        if torch.cuda.is_available() else 'CPU'
    return f'{cpu}, {os.cpu_count()} cores, {where}'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--iters',
        type=int,
        default=None,
        help=f'training iterations of every run (default {DEFAULT_ITERS})')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument(
        '--methods', nargs='+', choices=list(METHODS), default=None)
    parser.add_argument(
        '--amp',
        choices=['auto', 'on', 'off'],
        default='auto',
        help='bf16 autocast (auto: where the CPU has native bf16)')
    parser.add_argument(
        '--data', default=None, help='shapes dataset (made if missing)')
    parser.add_argument('--work-root', default=None)
    parser.add_argument(
        '--out', default=None, help='directory for mini_table1.md / .json')
    parser.add_argument(
        '--force', action='store_true', help='retrain finished runs')
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    if args.quick:
        args.iters = args.iters or 8
        args.seeds = [args.seeds[0]]
        args.methods = args.methods or list(QUICK_METHODS)
    args.iters = args.iters or DEFAULT_ITERS
    args.methods = args.methods or list(METHODS)
    base = args.out or osp.join(ROOT, 'work_dirs', 'mini_table1')
    suffix = '_quick' if args.quick else ''
    # absolute: tools/train.py runs in the repository root
    args.work_root = osp.abspath(
        args.work_root or osp.join(base, 'runs' + suffix))
    args.data = args.data or (osp.join(base, 'data_quick') if args.quick else
                              osp.join(ROOT, 'data', 'shapes'))
    if args.iters < 1:
        parser.error('--iters must be at least 1')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    amp = args.amp == 'on' or (args.amp == 'auto' and cpu_has_bf16())
    data = make_data(osp.abspath(args.data), args.quick)
    print(
        f'mini Table 1: {len(args.methods)} methods x seeds {args.seeds},'
        f' {args.iters} iterations, {"bf16" if amp else "fp32"}, data '
        f'{data}',
        flush=True)
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
    text = report(args, summary, checks, machine_line(), amp,
                  time.time() - start)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(osp.join(args.out, 'mini_table1.md'), 'w') as f:
            f.write(text + '\n')
        record = dict(
            args=dict(
                iters=args.iters,
                seeds=args.seeds,
                methods=args.methods,
                amp=amp,
                quick=args.quick,
                data=data),
            machine=machine_line(),
            overrides={n: METHODS[n][1]
                       for n in args.methods},
            summary=summary,
            orderings=checks,
            runs=runs)
        with open(osp.join(args.out, 'mini_table1.json'), 'w') as f:
            json.dump(record, f, indent=1)
        print(f'wrote {args.out}/mini_table1.md and mini_table1.json')


if __name__ == '__main__':
    main()
