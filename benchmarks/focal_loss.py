"""Benchmark the fused focal loss against mmdet's FocalLoss.

Forward + backward of the RetinaNet classification loss for B images at
608 x 800 (anchors: sum over strides 8..128 of ceil(608/s) * ceil(800/s) * 9
per image, 80 classes), ~0.1% positives, 5% ignored anchors (weight 0),
avg_factor = number of positives, as in AnchorHead.loss_by_feat_single.

Reference on CPU: ``mmdet.models.losses.FocalLoss`` (one-hot encoding +
``py_sigmoid_focal_loss``); on CUDA the same module dispatches to mmcv's
CUDA ``sigmoid_focal_loss`` op, which is then the reference.

Peak extra memory on CPU (default ``--memory alloc``): one forward +
backward runs under ``torch.profiler`` with ``profile_memory=True``; its
raw allocation / free events (every tensor the CPU allocator hands out:
one-hot, autograd temporaries, the gradient) are replayed in time order and
the highest running total above the start is the peak. This is exact and
deterministic. ``--memory rss`` instead runs each case in a fresh process
and reads the kernel's peak RSS (VmHWM, reset via /proc/self/clear_refs)
minus the RSS before the step: it also sees allocator slack, but on this VM
it moved by +-50 MiB between identical runs (library pages are reclaimed and
faulted back in), so it is the cross-check, not the default. Both include
the leaf's ``.grad`` (N x K float32) for both implementations. On CUDA:
``torch.cuda.max_memory_allocated`` above the starting level.

Much of the reference's CPU time is page faults on fresh N x K buffers: on
this VM ``THP_MEM_ALLOC_ENABLE=1`` (torch's allocator then asks for
transparent huge pages; it must be set before torch starts) took it from
~650 to ~255 ms for 2 images, and ours from ~50 to ~35 ms.

Usage: python benchmarks/focal_loss.py [--images 2 16] [--repeats 5]
       [--memory alloc|rss|none] [--device cpu|cuda]
"""
import argparse
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

os.environ.setdefault('KINETO_LOG_LEVEL', '5')  # quieter profiler

import torch  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import results_io  # noqa: E402

NUM_CLASSES = 80


def num_anchors(images: int, h: int = 608, w: int = 800) -> int:
    """Anchors of RetinaNet (P3-P7, 9 per location) for ``images``."""
    per_image = sum(
        math.ceil(h / s) * math.ceil(w / s) * 9 for s in (8, 16, 32, 64, 128))
    return per_image * images


def make_inputs(n: int, device: str = 'cpu', seed: int = 0):
    """Logits near the prior-initialised regime, realistic labels."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, NUM_CLASSES, generator=g).mul_(1.5).sub_(4.0)
    labels = torch.full((n, ), NUM_CLASSES, dtype=torch.long)
    pos = torch.randperm(n, generator=g)[:max(n // 1000, 1)]
    labels[pos] = torch.randint(0, NUM_CLASSES, (pos.numel(), ), generator=g)
    weight = torch.ones(n)
    weight[torch.randperm(n, generator=g)[:n // 20]] = 0  # ignored
    weight[pos] = 1
    avg_factor = float(pos.numel())
    return (pred.to(device), labels.to(device), weight.to(device), avg_factor)


def make_loss(impl: str):
    """The module under test: 'ours' or the mmdet reference."""
    if impl == 'ours':
        from projects.focal_retina.losses import FocalFamilyLoss
        return FocalFamilyLoss(gamma=2.0, alpha=0.25)
    from mmdet.models.losses import FocalLoss
    return FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25)


def step(loss_fn, pred, labels, weight, avg_factor) -> None:
    """One forward + backward, as in a training step."""
    pred.grad = None
    loss = loss_fn(pred, labels, weight, avg_factor=avg_factor)
    loss.backward()


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def time_case(impl: str, images: int, repeats: int, device: str) -> float:
    """Median wall time in ms over ``repeats`` runs after one warm-up."""
    pred, labels, weight, avg = make_inputs(num_anchors(images), device)
    pred.requires_grad_()
    loss_fn = make_loss(impl)
    step(loss_fn, pred, labels, weight, avg)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        step(loss_fn, pred, labels, weight, avg)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{key} not in /proc/self/status')


def peak_cpu_child(impl: str, images: int) -> float:
    """Run in a fresh process: peak RSS above the start, in MiB."""
    loss_fn = make_loss(impl)
    small = make_inputs(2000)
    step(loss_fn, small[0].requires_grad_(), *small[1:])  # init libraries
    pred, labels, weight, avg = make_inputs(num_anchors(images))
    pred.requires_grad_()
    before = _proc_status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM (peak RSS) to the current RSS
    step(loss_fn, pred, labels, weight, avg)
    return (_proc_status_kib('VmHWM') - before) / 1024


def peak_alloc_cpu(impl: str, images: int) -> float:
    """Peak of live CPU tensor bytes above the start (MiB), from the
    profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile
    pred, labels, weight, avg = make_inputs(num_anchors(images))
    pred.requires_grad_()
    loss_fn = make_loss(impl)
    step(loss_fn, pred, labels, weight, avg)
    pred.grad = None
    with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(loss_fn, pred, labels, weight, avg)
    events = [
        e for e in prof.profiler.kineto_results.events()
        if e.name() == '[memory]' and e.device_type().name == 'CPU'
    ]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:  # nbytes < 0 for a free
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def peak_memory(impl: str, images: int, device: str, how: str) -> float:
    """Peak extra memory (MiB) of one forward + backward."""
    if device == 'cpu' and how == 'alloc':
        return peak_alloc_cpu(impl, images)
    if device == 'cuda':
        pred, labels, weight, avg = make_inputs(num_anchors(images), device)
        pred.requires_grad_()
        loss_fn = make_loss(impl)
        step(loss_fn, pred, labels, weight, avg)
        pred.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(loss_fn, pred, labels, weight, avg)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    code = ('import sys, json; sys.path.insert(0, {root!r}); '
            'sys.path.insert(0, {here!r}); import focal_loss as b; '
            'print(json.dumps(b.peak_cpu_child({impl!r}, {images})))')
    code = code.format(
        root=ROOT,
        here=osp.dirname(osp.abspath(__file__)),
        impl=impl,
        images=images)
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run([sys.executable, '-c', code],
                         check=True,
                         capture_output=True,
                         text=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_agreement(images: int, device: str) -> float:
    """Max relative gradient difference between the two implementations."""
    pred, labels, weight, avg = make_inputs(num_anchors(images), device)
    grads = []
    for impl in ('ours', 'mmdet'):
        x = pred.clone().requires_grad_()
        step(make_loss(impl), x, labels, weight, avg)
        grads.append(x.grad)
    return ((grads[0] - grads[1]).abs().max() / grads[1].abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, nargs='+', default=[2, 16])
    parser.add_argument(
        '--repeats',
        type=int,
        default=5,
        help='timed runs per case (16 images: at most 3)')
    parser.add_argument(
        '--device',
        default=None,
        help='cpu or cuda (default: both when available)')
    parser.add_argument(
        '--memory',
        choices=['alloc', 'rss', 'none'],
        default='alloc',
        help='CPU peak-memory method')
    results_io.add_argument(parser)
    args = parser.parse_args()
    devices = [args.device] if args.device else (
        ['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'devices {devices}')
    ref_name = dict(
        cpu='mmdet FocalLoss (one-hot + py_sigmoid_focal_loss)',
        cuda='mmdet FocalLoss (mmcv CUDA sigmoid_focal_loss)')
    rows, diffs = [], {}
    results_io.mark_start()
    for device in devices:
        diff = diffs[device] = check_agreement(2, device)
        print(
            f'{device}: reference = {ref_name[device]}; max relative '
            f'gradient difference to it (2 img): {diff:.1e}',
            flush=True)
        for images in args.images:
            n = num_anchors(images)
            case = f'{device} {images} img ({n} x {NUM_CLASSES})'
            reps = args.repeats if images <= 2 else min(args.repeats, 3)
            res = {}
            for impl in ('mmdet', 'ours'):
                t = time_case(impl, images, reps, device)
                m = float('nan')
                if args.memory != 'none':
                    m = peak_memory(impl, images, device, args.memory)
                res[impl] = (t, m)
            for impl in ('mmdet', 'ours'):
                t, m = res[impl]
                rows.append((case, impl, t, t / res['mmdet'][0], m,
                             m / res['mmdet'][1]))
    head = ('case', 'impl', 'time ms', 'ratio', 'peak extra MiB', 'ratio')
    table = results_io.markdown_table(head, [
        (case, impl, f'{t:.1f}', f'{tr:.3f}', f'{m:.0f}', f'{mr:.3f}')
        for case, impl, t, tr, m, mr in rows
    ])
    print(table)
    if args.results:
        keys = ('case', 'impl', 'ms', 'ratio', 'peak_mib', 'peak_ratio')
        path = results_io.write_results(
            args.results,
            dict(
                repeats=args.repeats,
                memory=args.memory,
                max_relative_gradient_difference=diffs,
                rows=[dict(zip(keys, r)) for r in rows],
                table=table), sys.argv)
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
