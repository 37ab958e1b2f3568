"""Benchmark the DR loss against the focal loss on the same input.

Forward + backward of the RetinaNet classification loss on the input of
``benchmarks/focal_loss.py`` (its ``make_inputs``): 2 images at 608 x 800,
80 classes, ~182k anchors, ~0.1% positives, 5% ignored anchors. Cases:

* ``FocalFamilyLoss`` (ours, fused FL) -- the reference of the ratios;
* mmdet's ``FocalLoss`` (CPU: one-hot + ``py_sigmoid_focal_loss``; CUDA:
  mmcv's ``sigmoid_focal_loss`` op);
* ``DRLoss`` with ``grouping='per_batch'`` and ``'per_image'``.

Time: median of ``--repeats`` runs after a warm-up, the cases taking turns
within each repeat. Peak extra memory: on CPU the profiler's allocation
events of one forward + backward replayed in time order (exact,
deterministic; includes the N x K float32 gradient); on CUDA
``max_memory_allocated`` above the starting level.

Usage: python benchmarks/dr_loss.py [--repeats 5] [--device cpu|cuda]
       [--threads N] [--quick]
--quick: one small image and one repeat, a smoke test of the script.
"""
import argparse
import os
import os.path as osp
import statistics
import sys
import time

os.environ.setdefault('KINETO_LOG_LEVEL', '5')  # quieter profiler

import torch  # noqa: E402

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
for path in (ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

from focal_loss import NUM_CLASSES, make_inputs, num_anchors  # noqa: E402

from benchmarks import results_io  # noqa: E402

IMPLS = ('FocalFamilyLoss', 'mmdet FocalLoss', 'DRLoss per_batch',
         'DRLoss per_image')


def make_loss(impl: str) -> torch.nn.Module:
    """The loss module of a case (paper settings)."""
    if impl == 'FocalFamilyLoss':
        from projects.focal_retina.losses import FocalFamilyLoss
        return FocalFamilyLoss(gamma=2.0, alpha=0.25)
    if impl == 'mmdet FocalLoss':
        from mmdet.models.losses import FocalLoss
        return FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25)
    from projects.focal_retina.losses import DRLoss
    return DRLoss(grouping=impl.split()[-1])


def step(loss_fn, pred, labels, weight, avg_factor, num_images) -> float:
    """One forward + backward, called as the head calls the loss."""
    pred.grad = None
    kwargs = {}
    if getattr(loss_fn, 'needs_num_images', False):
        kwargs['num_images'] = num_images
    loss = loss_fn(pred, labels, weight, avg_factor=avg_factor, **kwargs)
    loss.backward()
    return loss.item()


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def time_cases(inputs, images, repeats, device) -> dict:
    """{impl: (median ms, loss value)}. The cases take turns within each
    repeat, so that load from other processes hits them alike."""
    losses = {impl: make_loss(impl) for impl in IMPLS}
    values = {impl: step(fn, *inputs, images) for impl, fn in losses.items()}
    times = {impl: [] for impl in IMPLS}
    for _ in range(repeats):
        for impl, loss_fn in losses.items():
            sync(device)
            t0 = time.perf_counter()
            step(loss_fn, *inputs, images)
            sync(device)
            times[impl].append(time.perf_counter() - t0)
    return {
        impl: (1e3 * statistics.median(times[impl]), values[impl])
        for impl in IMPLS
    }


def peak_memory(impl, inputs, images, device) -> float:
    """Peak extra memory (MiB) of one forward + backward."""
    loss_fn = make_loss(impl)
    step(loss_fn, *inputs, images)  # warm-up: lazy allocations
    inputs[0].grad = None
    if device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(loss_fn, *inputs, images)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(loss_fn, *inputs, images)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events()
         if e.name() == '[memory]' and e.device_type().name == 'CPU'),
        key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:  # nbytes < 0 for a free
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def run(device: str, images: int, h: int, w: int, repeats: int) -> list:
    """Rows (impl, ms, ms ratio, MiB, MiB ratio, loss) of one input."""
    n = num_anchors(images, h, w)
    pred, labels, weight, avg = make_inputs(n, device)
    pred.requires_grad_()
    inputs = (pred, labels, weight, avg)
    res = {}
    for impl, (t, value) in time_cases(inputs, images, repeats,
                                       device).items():
        res[impl] = (t, peak_memory(impl, inputs, images, device), value)
    ref_t, ref_m, _ = res['FocalFamilyLoss']
    return [(impl, t, t / ref_t, m, m / ref_m, v)
            for impl, (t, m, v) in res.items()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--device',
        default=None,
        help='cpu or cuda (default: both when available)')
    parser.add_argument(
        '--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='1 image of 128 x 160, 1 repeat (tests the script)')
    results_io.add_argument(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else (
        ['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    images, h, w = (1, 128, 160) if args.quick else (2, 608, 800)
    repeats = 1 if args.quick else args.repeats
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; '
          f'{images} image(s) {h}x{w}: {num_anchors(images, h, w)} anchors'
          f' x {NUM_CLASSES} classes, forward + backward, median of '
          f'{repeats}')
    head = ('device', 'loss', 'time ms', 'x FL', 'peak extra MiB', 'x FL',
            'loss value')
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    results_io.mark_start()
    cells, rows = [], []
    for device in devices:
        for impl, t, tr, m, mr, v in run(device, images, h, w, repeats):
            cells.append((device, impl, f'{t:.1f}', f'{tr:.2f}', f'{m:.1f}',
                          f'{mr:.2f}', f'{v:.4f}'))
            print('| ' + ' | '.join(cells[-1]) + ' |', flush=True)
            rows.append(
                dict(
                    device=device,
                    loss=impl,
                    ms=t,
                    vs_fl=tr,
                    peak_mib=m,
                    peak_vs_fl=mr,
                    value=v))
    if args.results:
        path = results_io.write_results(
            args.results,
            dict(
                images=images,
                size=[h, w],
                repeats=repeats,
                rows=rows,
                table=results_io.markdown_table(head, cells)),
            sys.argv if argv is None else [sys.argv[0], *argv])
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
