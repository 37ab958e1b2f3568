"""Benchmark one-stage OHEM: a RetinaNet R-50 training step with FL and with
every OHEM setting of the paper's Table 1d, measured in one run.

One step = forward + loss + backward + SGD step of
``configs/ablations/retina_r50_fpn_600_1x.py`` (R-50-FPN, random init, no
pretrained weights needed) on 2 images of 600 x 800 (padded to 608 x 800)
with 7 random boxes each (COCO's mean). The settings are read from
``configs/ablations/table1d_ohem/`` (each config's ``loss_cls`` and
``train_cfg.sampler``; Table 1d itself uses R-101, the step here is R-50
as the ablations' default) and swapped on one model, so every setting runs
the same weights. Settings are interleaved (round robin over the settings,
``--repeats`` rounds after one warm-up round), so that load from other
processes hits all settings alike; the table gives each setting's fastest
round (the least disturbed; ratios use it) and its median. ``loss ms`` is
the head's ``loss_by_feat`` (targets, selection, loss; forward only),
``select ms`` the OHEM selection alone (scoring, sort, NMS) inside it (both
medians), and ``select / FL step`` that selection as a fraction of the FL
step: on a shared machine the whole-step ratio moves by tens of percent
between runs, the selection's own cost does not.

Goal: an OHEM step <= 1.3 x the FL step.

Usage: python benchmarks/ohem.py [--repeats 5] [--size 600 800]
       [--images 2] [--amp] [--threads N] [--quick]
``--quick``: 2 images of 96 x 128, one round and no warm-up: a check that
it all runs, not a measurement.
"""
import argparse
import glob
import os.path as osp
import statistics
import sys
import time
from contextlib import nullcontext

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import results_io  # noqa: E402

BASE = osp.join(ROOT, 'configs', 'ablations', 'retina_r50_fpn_600_1x.py')
TABLE1D = osp.join(ROOT, 'configs', 'ablations', 'table1d_ohem')


def table1d_settings():
    """(name, loss_cls cfg, sampler cfg) of each Table 1d config: FL
    first, then in the paper's order (nms .7, nms .5, OHEM 1:3)."""
    from projects.focal_retina.engine.cli import read_config
    out = []
    for path in sorted(glob.glob(osp.join(TABLE1D, '*.py'))):
        cfg = read_config(path)
        name = osp.basename(path)[len('retina_r101_fpn_600_1x_'):-3]
        out.append((name, cfg.model.bbox_head.loss_cls.to_dict(),
                    cfg.model.train_cfg.sampler.to_dict()))

    def paper_order(setting):
        sampler = setting[2]
        if sampler['type'] != 'OneStageOHEMSampler':
            return (0, )
        return (1, sampler.get('pos_fraction')
                is not None, -sampler['nms_iou'], sampler['batch_size'])

    return sorted(out, key=paper_order)


def build_model():
    from mmdet.registry import MODELS
    from mmengine.logging import MMLogger

    import projects.focal_retina  # noqa: F401  (registers components)
    from projects.focal_retina.engine.cli import read_config
    cfg = read_config(BASE)
    cfg.model.backbone.init_cfg = None  # no pretrained weights here
    model = MODELS.build(cfg.model)
    # init_weights logs every parameter at INFO level
    MMLogger.get_current_instance().setLevel('WARNING')
    model.init_weights()
    return model.train()


def make_batch(model, images: int, h: int, w: int, seed: int = 0):
    """Preprocessed inputs with 7 random boxes of 32-300 px per image."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(images):
        inputs.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        wh = torch.rand(7, 2, generator=g) * 268 + 32
        wh = torch.minimum(wh, torch.tensor([w - 1., h - 1.]))
        xy = torch.rand(7, 2, generator=g) * (torch.tensor([w, h]) - wh)
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, 80, (7, ), generator=g))
        samples.append(sample)
    return model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)


def use_setting(model, loss_cfg: dict, sampler_cfg: dict) -> None:
    """Swap the head's loss and sampler (built as the head builds them)."""
    from mmdet.registry import MODELS, TASK_UTILS
    head = model.bbox_head
    head.loss_cls = MODELS.build(dict(loss_cfg, use_sigmoid=True))
    head.sampler = TASK_UTILS.build(
        sampler_cfg, default_args=dict(context=head))


class Timers:
    """Time spent in the head's loss (targets, selection and loss, forward
    only) and in the sampler's selection, during one step."""

    def __init__(self, head):
        self.loss = self.select = 0.0
        self.kept = None
        self._wrap(head, 'loss_by_feat', 'loss')
        if hasattr(head.sampler, 'select_examples'):
            self._wrap(head.sampler, 'select_examples', 'select')

    def _wrap(self, obj, method: str, field: str) -> None:
        func = getattr(obj, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = func(*args, **kwargs)
            setattr(self, field,
                    getattr(self, field) + time.perf_counter() - start)
            if field == 'select':
                self.kept = out[1].float().mean().item()
            return out

        setattr(obj, method, timed)


def step(model, optimizer, data, amp: bool) -> float:
    """One training step; returns the total loss."""
    ctx = torch.autocast('cpu', dtype=torch.bfloat16) if amp else \
        nullcontext()
    with ctx:
        losses = model(**data, mode='loss')
    loss = sum(
        sum(v) if isinstance(v, list) else v for k, v in losses.items()
        if 'loss' in k)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--size', type=int, nargs=2, default=[600, 800])
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument(
        '--amp',
        action='store_true',
        help='bfloat16 autocast around the forward')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch intra-op threads (default: torch\'s)')
    parser.add_argument('--quick', action='store_true')
    results_io.add_argument(parser)
    args = parser.parse_args()
    warmup = 1
    if args.quick:
        args.repeats, args.size, warmup = 1, [96, 128], 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model()
    data = make_batch(model, args.images, *args.size)
    # lr 0: every setting sees the same weights, the step still runs.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    settings = table1d_settings()
    times = {name: dict(step=[], loss=[], select=[]) for name, *_ in settings}
    kept = {}
    head = model.bbox_head
    results_io.mark_start()
    for rnd in range(args.repeats + warmup):
        for name, loss_cfg, sampler_cfg in settings:
            use_setting(model, loss_cfg, sampler_cfg)
            head.__dict__.pop('loss_by_feat', None)  # last timer's wrapper
            timers = Timers(head)
            start = time.perf_counter()
            loss = step(model, optimizer, data, args.amp)
            elapsed = time.perf_counter() - start
            if not loss == loss:
                raise RuntimeError(f'{name}: loss is NaN')
            if rnd >= warmup:
                times[name]['step'].append(elapsed)
                times[name]['loss'].append(timers.loss)
                times[name]['select'].append(timers.select)
                kept[name] = timers.kept
    report(settings, times, kept, args)


def report(settings, times, kept, args) -> None:
    """Print the table: the fastest of the rounds (the least disturbed by
    other processes; ratios to the FL step use it) and the median; with
    ``--results``, write it and the figures behind it."""
    h, w = args.size
    print(f'R-50-FPN training step, {args.images} images {h}x{w}, '
          f'{"bf16 autocast" if args.amp else "fp32"}, '
          f'{torch.get_num_threads()} threads, {args.repeats} rounds')
    head = ('setting', 'step ms, min', 'ratio to FL', 'step ms, median',
            'loss ms', 'select ms', 'select / FL step', 'kept / image')
    ref = min(times['fl']['step'])
    ref_median = statistics.median(times['fl']['step'])
    cells, rows = [], {}
    for name, *_ in settings:
        ms = {k: statistics.median(v) * 1e3 for k, v in times[name].items()}
        best = min(times[name]['step'])
        k = '-' if kept.get(name) is None else f'{kept[name]:.0f}'
        cells.append(
            (name, f'{best * 1e3:.0f}', f'{best / ref:.3f}',
             f'{ms["step"]:.0f}', f'{ms["loss"]:.0f}', f'{ms["select"]:.1f}',
             f'{ms["select"] / 1e3 / ref:.4f}', k))
        rows[name] = dict(
            step_ms_min=best * 1e3,
            ratio_min=best / ref,
            step_ms_median=ms['step'],
            ratio_median=ms['step'] / 1e3 / ref_median,
            loss_ms=ms['loss'],
            select_ms=ms['select'],
            select_fraction=ms['select'] / 1e3 / ref,
            kept=kept.get(name),
            step_ms_all=[t * 1e3 for t in times[name]['step']])
    table = results_io.markdown_table(head, cells)
    print(table)
    if args.results:
        ohem = [r for n, r in rows.items() if n != 'fl']
        summary = {
            f'{what}_{end}': pick(r[what] for r in ohem)
            for what in ('ratio_min', 'ratio_median', 'select_fraction',
                         'loss_ms')
            for end, pick in (('lo', min), ('hi', max))
        }
        path = results_io.write_results(
            args.results,
            dict(
                images=args.images,
                size=[h, w],
                amp=args.amp,
                repeats=args.repeats,
                settings=rows,
                ohem=summary,
                table=table), sys.argv)
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
