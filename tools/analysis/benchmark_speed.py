"""Inference time and FLOPs per image, and the AP-vs-time plot of Figure 2.

    python tools/analysis/benchmark_speed.py CONFIG [CONFIG ...]
        [--checkpoint CKPT ...] [--scales 400 500 600 700 800]
        [--images PATH ...] [--repeat 20] [--warmup 3] [--device cpu]
        [--threads N] [--amp] [--results ap.json] [--out fig2.png]
        [--json speed.json]

The time of one image is ``model.test_step``: data preprocessing on the
device (normalise, pad), forward pass and post-processing (decoding, the
0.05 threshold, top 1000 per level, NMS), i.e. the paper's inference time
(Sec. 4.1, Table 1e); image decoding and resizing are done once before.
After ``--warmup`` runs, ``--repeat`` runs are timed (CUDA synchronised)
and the median is reported. FLOPs come from mmengine's
``get_model_complexity_info`` on the same input, as mmdet's
``tools/analysis_tools/get_flops.py`` does (mmengine counts one
multiply-add as one flop). ``--scales`` sets the shorter side of the test
``Resize`` (the longer-side cap keeps the config's ratio, e.g. 800/1333).

Departs from mmdet's ``tools/analysis_tools/benchmark.py`` (not installed,
and its ``InferenceBenchmark`` reports a mean fps over a dataloader, data
loading included) to time exactly the paper's quantity, per config and
scale, with a median, on CPU or CUDA.

With ``--results`` ({config: AP} as written by collect_results.py; a key
``CONFIG@SCALE`` for a scale given with ``--scales``) it draws AP against
time with the paper's Figure 2 points overlaid: Table 1e (RetinaNet-50 and
-101 at 400-800 px, test-dev, M40 GPU) and the other detectors of
Figure 2's legend.
"""
import argparse
import glob
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.utils import track_iter_progress

# yapf: disable
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from figure2 import plot_figure2  # noqa: E402
from figure_io import check_figure_path, fail  # noqa: E402

from benchmarks import results_io  # noqa: E402
from projects.focal_retina.engine.cli import load_config  # noqa: E402

# yapf: enable

IMG_EXT = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def load_images(paths: List[str], shape) -> List[np.ndarray]:
    """BGR images of files, folders and globs; else one noise image."""
    import mmcv
    files = []
    for p in paths or []:
        if osp.isdir(p):
            files += sorted(
                osp.join(p, f) for f in os.listdir(p)
                if f.lower().endswith(IMG_EXT))
        else:
            files += sorted(glob.glob(p)) if not osp.exists(p) else [p]
    if paths and not files:
        fail(f'--images {paths}: no image found')
    if not files:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8)]
    return [mmcv.imread(f) for f in files]


def set_scale(cfg, scale: int) -> None:
    """Shorter side ``scale`` in the test Resize, keeping its ratio."""
    from mmdet.utils import get_test_pipeline_cfg
    for step in get_test_pipeline_cfg(cfg):
        if step['type'] in ('Resize', 'mmdet.Resize'):
            w, h = step['scale']
            ratio = max(w, h) / min(w, h)
            step['scale'] = (round(scale * ratio), scale)
            return
    fail('no Resize step in the test pipeline to set --scales on')


def build_model(cfg, checkpoint: Optional[str], device: str):
    from mmdet.apis import init_detector
    if checkpoint is None:
        # Untrained: mmdet's init (prior included), no download.
        cfg.model.backbone.init_cfg = None
        model = init_detector(cfg, None, device=device)
        model.init_weights()
        print('note: no checkpoint; untrained weights leave few boxes '
              'above the score threshold, so post-processing is cheaper '
              'than with a trained model')
    else:
        model = init_detector(cfg, checkpoint, device=device)
    return model.eval()


def make_batch(cfg, img: np.ndarray) -> dict:
    """The test pipeline on a BGR array (no annotations)."""
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    steps = [
        s for s in get_test_pipeline_cfg(cfg).copy()
        if 'LoadAnnotations' not in s['type']
    ]
    load = [i for i, s in enumerate(steps) if 'LoadImage' in s['type']]
    if not load:
        fail('no LoadImageFromFile step in the test pipeline')
    steps[load[0]] = dict(type='mmdet.LoadImageFromNDArray')
    data = Compose(steps)(dict(img=img, img_id=0))
    return dict(inputs=[data['inputs']], data_samples=[data['data_samples']])


def time_model(model, batches: List[dict], warmup: int, repeat: int,
               device: str, amp: bool) -> List[float]:
    """Milliseconds of each timed ``test_step`` (warm-up excluded)."""
    cuda = device.startswith('cuda')
    dtype = torch.float16 if cuda else torch.bfloat16
    ctx = torch.autocast(device.split(':')[0], dtype=dtype) if amp \
        else nullcontext()
    times = []
    with torch.no_grad(), ctx:
        for i in track_iter_progress(list(range(warmup + repeat))):
            batch = batches[i % len(batches)]
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model.test_step(batch)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - start))
    return times


def flops(model, batch: dict) -> Dict[str, float]:
    """GFLOPs (multiply-adds) and parameters (M) of the tensor forward."""
    from mmengine.analysis import get_model_complexity_info
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        info = get_model_complexity_info(
            model,
            inputs=(data['inputs'], ),
            show_table=False,
            show_arch=False)
    return dict(gflops=info['flops'] / 1e9, mparams=info['params'] / 1e6)


def describe(device: str, amp: bool) -> str:
    if device.startswith('cuda'):
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open('/proc/cpuinfo') as f:
                name = next(
                    line.split(':', 1)[1].strip() for line in f
                    if line.startswith('model name'))
        except (OSError, StopIteration):
            pass
    dtype = ('float16' if device.startswith('cuda') else 'bfloat16') + \
        ' autocast' if amp else 'float32'
    return (f'device: {device} ({name}); torch threads: '
            f'{torch.get_num_threads()}; dtype: {dtype}; torch '
            f'{torch.__version__}')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument(
        '--checkpoint', nargs='+', help='one per config (default: untrained)')
    parser.add_argument('--scales', type=int, nargs='+')
    parser.add_argument('--images', nargs='+', help='files, folders, globs')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[480, 640],
        metavar=('H', 'W'),
        help='noise image without '
        '--images')
    parser.add_argument('--repeat', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int)
    parser.add_argument(
        '--amp',
        action='store_true',
        help='bfloat16 autocast on CPU, float16 on CUDA')
    parser.add_argument('--no-flops', action='store_true')
    parser.add_argument('--results', help='JSON {config[@scale]: AP}')
    parser.add_argument('--out', help='the Figure 2 plot (needs --results)')
    parser.add_argument('--json', help='write the measurements here')
    # --results is the AP input of the plot (kept as it was), so the
    # results file of the docs is named by --record.
    results_io.add_argument(parser, '--record')
    parser.add_argument('--dpi', type=int, default=100)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    if args.checkpoint and len(args.checkpoint) != len(args.configs):
        parser.error('--checkpoint needs one file per config')
    if args.repeat < 1 or args.warmup < 0:
        parser.error('--repeat must be >= 1 and --warmup >= 0')
    if args.out and not args.results:
        parser.error('--out (Figure 2) needs --results')
    return args


def main() -> None:
    args = parse_args()
    if args.out:
        check_figure_path(args.out)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        fail(f'--device {args.device}: CUDA is not available')
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    if args.results:
        with open(args.results) as f:
            results = json.load(f)
    images = load_images(args.images, args.shape)
    results_io.mark_start()
    print(describe(args.device, args.amp))
    rows = []
    ckpts = args.checkpoint or [None] * len(args.configs)
    for config, ckpt in zip(args.configs, ckpts):
        for scale in args.scales or [None]:
            cfg = load_config(config, args.cfg_options)
            if scale is not None:
                set_scale(cfg, scale)
            model = build_model(cfg, ckpt, args.device)
            batches = [make_batch(cfg, img) for img in images]
            ms = time_model(model, batches, args.warmup, args.repeat,
                            args.device, args.amp)
            shape = batches[0]['data_samples'][0].img_shape
            row = dict(
                key=config if scale is None else f'{config}@{scale}',
                config=config,
                scale=scale,
                input_hw=list(shape),
                ms_median=statistics.median(ms),
                ms_p25=float(np.percentile(ms, 25)),
                ms_p75=float(np.percentile(ms, 75)),
                runs=len(ms))
            if not args.no_flops:
                row.update(flops(model, batches[0]))
            rows.append(row)
    print(describe(args.device, args.amp))
    table = results_io.markdown_table(
        ('config', 'scale', 'input (h×w)', 'ms / image (median)', 'p25–p75',
         'GFLOPs', 'params (M)'),
        [(f'`{r["config"]}`', r['scale']
          or 'config', f'{r["input_hw"][0]}×{r["input_hw"][1]}',
          f'{r["ms_median"]:.1f}', f'{r["ms_p25"]:.1f}–{r["ms_p75"]:.1f}',
          f'{r.get("gflops", float("nan")):.1f}',
          f'{r.get("mparams", float("nan")):.1f}') for r in rows])
    print(table)
    if args.record:
        path = results_io.write_results(
            args.record,
            dict(
                setup=describe(args.device, args.amp),
                rows={r['key']: r
                      for r in rows},
                # the AP of each point as read from --results
                ap=results,
                ap_json=json.dumps(results, indent=1),
                table=table),
            sys.argv)
        print(f'results written to {path}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(
                dict(setup=describe(args.device, args.amp), rows=rows),
                f,
                indent=2)
    if args.out:
        plot_figure2(rows, results, args.out, args.dpi, args.device)


if __name__ == '__main__':
    main()
