"""End-to-end speed: stock mmdet RetinaNet against our paper config.

Two models on identical inputs and weights:

* ``stock``: mmdet 3.3's own ``retinanet_r50_fpn_1x_coco.py`` (read from
  the installed mmdet package: ``RetinaHead``, mmdet ``FocalLoss`` -- a
  Python one-hot path on the CPU --, L1 box loss, no ReLU before P7);
* ``ours``: ``configs/retina_r50_fpn_1x.py`` (``FocalRetinaHead``, the
  fused ``FocalFamilyLoss``, smooth L1, ReLU before P7, global normaliser).

Both with the backbone's ``init_cfg`` off (no download), built with the
same seed; every stock tensor whose name and shape exist in ours is then
copied into ours (the architectures share all parameters; the count is
printed). The input is synthetic: ``--images`` uint8 images per size
(``--sizes``, default 608x800 and 800x1333) with 7 random boxes each,
passed through each model's own data preprocessor (part of every timed
step, as in mmengine's ``train_step`` / ``test_step``).

Randomly initialised heads score every anchor at the prior (0.01), below
the 0.05 test threshold, so inference would skip post-processing. The
last classification bias of both models is therefore shifted (the same
value in both) so that ``--pass-fraction`` (default 0.1%) of the
(anchor, class) scores of the benchmark images pass the threshold: top-k,
box decoding and NMS then have a trained detector's kind of workload.

Measured, per size:

* train step: data preprocessor + forward in loss mode + backward + SGD
  step (lr 0 so every repetition runs on the same weights; momentum and
  weight decay are still computed), ``--warmup`` steps, then ``--reps``
  steps of each model interleaved (stock, ours, stock, ours, ...);
  per-pair ratios ours / stock and medians;
* inference per image: ``model.test_step`` (preprocessor, forward,
  post-processing with rescale) under ``torch.no_grad`` on the same batch,
  divided by the number of images; interleaved likewise;
* peak memory, fp32: every measurement in a fresh subprocess. On the CPU,
  the kernel's peak RSS (``VmHWM`` in /proc/self/status, reset through
  /proc/self/clear_refs after the model and input are built) minus the RSS
  at that point, over two training steps (the first one allocates the
  gradients and the momentum buffers) or one inference; tracemalloc does
  not see torch's allocations. On CUDA, ``torch.cuda.max_memory_allocated``
  above the allocation at the same point;
* each opt-in option separately, both models under it: ``bf16``
  (``torch.autocast`` bfloat16 around the forward), ``channels_last``
  (weights and input batch), ``fuse_conv_bn`` (inference only: copies
  with every BatchNorm folded into its conv by mmcv's ``fuse_conv_bn``,
  what ``tools/test.py --fuse-conv-bn`` runs), ``compile``
  (``torch.compile`` of the backbone, the FPN and the head's forward --
  the tensor parts, i.e. almost all FLOPs; target assignment and
  post-processing have data-dependent shapes). ``compile`` runs in a
  subprocess with ``--compile-timeout``; a failure or a timeout is
  reported as ``n/a`` with the reason;
* FLOPs: ``mmengine.analysis.FlopAnalyzer`` on the tensor-mode forward of
  one image (it counts multiply-accumulates; GFLOP = 2 x GMAC), and a
  256-channel 3x3 convolution on a P3-sized map (batch ``--images``) timed
  in the same run: the machine's practical conv throughput, so that the
  achieved GFLOP/s show the distance to it. A training step is counted as
  3 forwards (forward + two backward convolutions per forward one).

Targets (issue 14): train step ours / stock <= 0.70 and inference per
image ours / stock <= 0.90, both in fp32; the script says whether the
measured medians meet them.

``--profile``: one training step and one inference of each model after
the timed rounds (which warm them up), split with forward hooks and
wrappers on the model instances (nothing global is patched): data
preprocessor, backbone, FPN, head
forward, anchors, target assignment (``head.get_targets``), the loss
modules, the rest of ``loss_by_feat``, backward, optimizer step; and for
inference the post-processing (``predict_by_feat``) and, inside it,
``_bbox_post_process`` (score filter, rescale, NMS).

Usage: python benchmarks/e2e_speed.py [--sizes 608x800 800x1333]
       [--images 2] [--reps 5] [--warmup 1] [--device cpu|cuda]
       [--options fp32 bf16 channels_last fuse_conv_bn compile]
       [--threads N]
       [--profile] [--out DIR] [--quick]
``--quick``: 2 images of 256x320, 1 warm-up + 2 reps, fp32, bf16,
channels-last and fuse_conv_bn (no compile), one thread, the memory
workers side by side: a check that it all runs in about two minutes, not
a measurement.
"""
import argparse
import gc
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import results_io  # noqa: E402
from benchmarks.e2e import models, phases, tables, timing, workers


def parse_size(text: str) -> Tuple[int, int]:
    """``'608x800'`` -> (608, 800): height x width."""
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'size {text!r}: expected HEIGHTxWIDTH, e.g. 608x800')
    if h < 64 or w < 64:
        raise argparse.ArgumentTypeError(f'size {text!r}: at least 64x64')
    return h, w


def size_name(size: Tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--sizes',
        type=parse_size,
        nargs='+',
        default=[(608, 800), (800, 1333)],
        help='HEIGHTxWIDTH of the images (default: 608x800 800x1333)')
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument(
        '--reps', type=int, default=5, help='timed rounds per option')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument(
        '--options',
        nargs='+',
        choices=models.OPTIONS,
        default=list(models.OPTIONS),
        help='fp32 is always run (the reference of the targets)')
    parser.add_argument(
        '--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument(
        '--pass-fraction',
        type=float,
        default=1e-3,
        help='share of (anchor, class) scores above the test threshold')
    parser.add_argument(
        '--compile-timeout',
        type=float,
        default=1200,
        help='seconds for the whole torch.compile run of one size')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--profile', action='store_true')
    parser.add_argument('--out', help='directory for e2e_speed.md / .json')
    results_io.add_argument(parser)
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.warmup, args.reps = [(256, 320)], 1, 2
        args.options = ['fp32', 'bf16', 'channels_last', 'fuse_conv_bn']
        # one thread: with other jobs on the cores, OpenMP barriers make
        # two threads many times slower (a smoke run must not stall)
        args.threads = args.threads or 1
    if 'fp32' not in args.options:
        args.options = ['fp32'] + list(args.options)
    if args.reps < 1 or args.images < 1:
        parser.error('--reps and --images must be at least 1')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no GPU visible')
    return args


def measure_size(args, size: Tuple[int, int]) -> Dict:
    """Everything measured at one image size."""
    name = size_name(size)
    data = models.make_data(args.images, *size)
    pair, info = models.build_pair(args.device, data, args.pass_fraction)
    print(
        f'[{name}] weights: {info["copied_tensors"]} stock tensors copied '
        f'into ours, {info["own_tensors"]} of ours kept; cls bias '
        f'{info["cls_bias"]:.3f} ({args.pass_fraction:.2%} of scores '
        'above the threshold)',
        flush=True)
    out = dict(info=info, speed={}, memory={})
    out['flops'] = dict(
        macs_stock=phases.count_macs(pair['stock'], *size, args.device),
        macs_ours=phases.count_macs(pair['ours'], *size, args.device),
        conv_gflops_fp32=phases.conv_gflops(args.images, *size, args.device,
                                            False))
    if 'bf16' in args.options:
        out['flops']['conv_gflops_bf16'] = phases.conv_gflops(
            args.images, *size, args.device, True)
    for option in args.options:
        start = time.time()
        if option == 'compile':
            task = dict(
                kind='compile',
                size=list(size),
                images=args.images,
                device=args.device,
                warmup=args.warmup,
                reps=args.reps,
                threads=args.threads,
                pass_fraction=args.pass_fraction)
            raw = workers.finish_worker(
                workers.start_worker(task), args.compile_timeout)
        else:
            raw = timing.time_option(pair, data, option, args.device,
                                     args.warmup, args.reps)
        if 'error' in raw:  # the whole compile worker failed
            raw = {p: dict(error=raw['error']) for p in models.PHASES}
        out['speed'][option] = {
            p: raw[p] if 'error' in raw[p] else timing.summarise(raw[p])
            for p in models.PHASES
        }
        out['speed'][option]['first_call_s'] = raw.get('first_call')
        print(f'[{name}] {option}: {time.time() - start:.0f} s', flush=True)
    if args.profile:
        out['profile'] = {
            k: phases.profile_model(m, data, args.device)
            for k, m in pair.items()
        }
    del pair
    gc.collect()
    if not args.no_memory:
        tasks = [
            dict(
                kind='memory',
                model=m,
                phase=phase,
                size=list(size),
                images=args.images,
                device=args.device,
                threads=args.threads,
                cls_bias=info['cls_bias']) for phase in models.PHASES
            for m in models.MODEL_NAMES
        ]
        # --quick: at the same time (peaks are per process; it is quicker)
        results = iter(workers.run_workers(tasks, args.quick))
        for phase in models.PHASES:
            out['memory'][phase] = {
                m: next(results)
                for m in models.MODEL_NAMES
            }
        print(f'[{name}] memory done', flush=True)
    return out


def _load(values: List[float]) -> str:
    return ' '.join(f'{v:.1f}' for v in values)


def report(args, machine: Dict, per_size: Dict) -> Tuple[str, Dict]:
    """The Markdown report and the JSON record."""
    res = {s: r['speed'] for s, r in per_size.items()}
    mem = {s: r['memory'] for s, r in per_size.items() if r['memory']}
    flops = {s: r['flops'] for s, r in per_size.items()}
    targets = tables.target_rows(res)
    lines = [
        '## End-to-end speed: stock mmdet retinanet_r50_fpn_1x_coco vs ours',
        '', f'- machine: {machine["cpu"]}, {machine["cpu_count"]} CPUs; '
        f'device {machine["device"]}'
        f'{", " + machine["gpu"] if "gpu" in machine else ""}; torch '
        f'{machine["torch"]}, {machine["torch_threads"]} threads; '
        f'dtype {machine["dtype"]}; {machine["date"]}; load average '
        f'(1, 5, 15 min) {_load(machine["load_average_start"])} at the start,'
        f' {_load(machine["load_average_end"])} at the end',
        f'- {args.images} images per step, warm-up {args.warmup}, '
        f'{args.reps} timed rounds'
        f'{"; --quick smoke run (not a measurement)" if args.quick else ""}',
        ''
    ]
    parts = dict(
        speed=tables.speed_table(res, args.images),
        flops=tables.flops_table(flops, res, args.images))
    if mem:
        parts['memory'] = tables.memory_table(mem)
    parts['targets'] = tables.target_table(targets)
    for size, r in per_size.items():
        if 'profile' in r:
            parts[f'profile_{size}'] = tables.profile_table(
                size, args.images, r['profile'])
    for part in parts.values():
        lines += part + ['']
    record = dict(
        machine=machine,
        args=dict(
            sizes=[size_name(s) for s in args.sizes],
            images=args.images,
            reps=args.reps,
            warmup=args.warmup,
            options=args.options,
            quick=args.quick,
            pass_fraction=args.pass_fraction),
        results=per_size,
        targets=targets,
        # each table as the report prints it, for the pages to embed
        tables={
            k: '\n'.join(v).strip('\n')
            for k, v in parts.items()
        })
    return '\n'.join(lines), record


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        workers.worker_main(json.loads(args.worker))
        return
    machine = tables.machine_info(args.device)
    print(
        f'device {args.device} ({machine["cpu"]}'
        f'{", " + machine["gpu"] if "gpu" in machine else ""}), torch '
        f'{machine["torch"]}, {machine["torch_threads"]} threads, '
        f'options {args.options}',
        flush=True)
    per_size = {}
    results_io.mark_start()
    for size in args.sizes:
        per_size[size_name(size)] = measure_size(args, size)
    machine['load_average_end'] = list(os.getloadavg())
    text, record = report(args, machine, per_size)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(osp.join(args.out, 'e2e_speed.md'), 'w') as f:
            f.write(text + '\n')
        with open(osp.join(args.out, 'e2e_speed.json'), 'w') as f:
            json.dump(record, f, indent=1)
        print(f'wrote {args.out}/e2e_speed.md and e2e_speed.json')
    if args.results:
        path = results_io.write_results(
            args.results, record,
            sys.argv if argv is None else [sys.argv[0], *argv])
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
