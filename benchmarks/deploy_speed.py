"""onnxruntime vs PyTorch eager (fp32, bf16 autocast), per image, on the CPU.

    python benchmarks/deploy_speed.py [--quick] [--reps 10] [--threads 2]
        [--graph-opt all] [--out work_dirs/deploy_speed]

Two models, randomly initialised (``init_cfg=None``; the speed does not
depend on the weights): the demo model (configs/demo/) at 256x256 and
RetinaNet R-50-FPN (configs/retina_r50_fpn_1x.py) at 608x800. Per image,
from the normalised input tensor to detections in image pixels:

* ``torch fp32``: forward + mmdet's ``predict_by_feat``;
* ``torch bf16``: the forward under ``torch.autocast('cpu', bfloat16)``
  (what ``--amp`` means on the CPU here), the same post-processing;
* ``ort``: the default export + the NumPy post-processing;
* ``ort graph-nms``: the ``--with-postprocess`` export (one session run).

The classification bias is set to -3 (scores ≈ 0.05) so that every level
fills its ``nms_pre`` candidates, as a trained model's P3/P4 do on a busy
image; the post-processing time is printed separately. Backends run
interleaved, one image each per round, after a warm-up; medians and the
median of the per-round ratios are printed. ``--quick`` (the test suite's
smoke run): small inputs, 2 rounds.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import numpy as np
import torch

from benchmarks import results_io
from benchmarks.machine import cpu_model

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODELS = [('demo', 'configs/demo/retina_r18_fpn_shapes.py', (256, 256)),
          ('R-50', 'configs/retina_r50_fpn_1x.py', (608, 800))]
QUICK_SIZES = dict(demo=(128, 128), **{'R-50': (128, 160)})
BACKENDS = ('torch fp32', 'torch bf16', 'ort', 'ort graph-nms')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='smoke run')
    parser.add_argument('--reps', type=int, help='rounds (default 10)')
    parser.add_argument(
        '--threads', type=int, default=2, help='torch and onnxruntime')
    parser.add_argument(
        '--graph-opt',
        default='all',
        choices=('disable', 'basic', 'extended', 'all'),
        help='onnxruntime graph optimisation level')
    parser.add_argument('--out', default='work_dirs/deploy_speed')
    results_io.add_argument(parser)
    return parser.parse_args()


def build(config: str):
    from mmengine.logging import MMLogger

    from projects.focal_retina.deployment.export import build_detector
    from projects.focal_retina.engine.cli import read_config
    cfg = read_config(osp.join(ROOT, config))
    cfg.model.backbone.init_cfg = None  # no pretrained weights here
    MMLogger.get_current_instance().setLevel('ERROR')
    torch.manual_seed(0)
    model, classes = build_detector(cfg)
    model.init_weights()
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(-3.0)
    return model.eval(), cfg, classes


def runners(model, cfg, classes, tmp: str, args) -> dict:
    """One callable per backend: batch (1, 3, H, W) → (total s, post s)."""
    from projects.focal_retina.deployment import OnnxDetector
    from projects.focal_retina.deployment.export import export_onnx
    sessions = {}
    for name, in_graph in (('ort', False), ('ort graph-nms', True)):
        path = osp.join(tmp, f'{id(model)}_{in_graph}.onnx')
        export_onnx(model, cfg, classes, path, with_postprocess=in_graph)
        sessions[name] = OnnxDetector(
            path, threads=args.threads, graph_opt=args.graph_opt)

    def torch_run(bf16: bool):

        def run(batch, metas):
            t0 = time.perf_counter()
            with torch.no_grad(), torch.autocast(
                    'cpu', dtype=torch.bfloat16, enabled=bf16):
                cls, box = model.bbox_head(
                    model.extract_feat(torch.from_numpy(batch)))
            t1 = time.perf_counter()
            with torch.no_grad():
                model.bbox_head.predict_by_feat([c.float() for c in cls],
                                                [b.float() for b in box],
                                                batch_img_metas=metas,
                                                rescale=True)
            t2 = time.perf_counter()
            return t2 - t0, t2 - t1

        return run

    def ort_run(det):

        def run(batch, metas):
            from projects.focal_retina.deployment import predict_by_feat
            t0 = time.perf_counter()
            if det.in_graph:
                det.run_batch(batch, metas)
                return time.perf_counter() - t0, float('nan')
            cls, box = det.run_raw(batch)
            t1 = time.perf_counter()
            predict_by_feat(cls, box, metas, det.meta['head'],
                            det.meta['test_cfg'])
            t2 = time.perf_counter()
            return t2 - t0, t2 - t1

        return run

    return {
        'torch fp32': torch_run(False),
        'torch bf16': torch_run(True),
        'ort': ort_run(sessions['ort']),
        'ort graph-nms': ort_run(sessions['ort graph-nms']),
        '_describe': sessions['ort'].describe()
    }


def measure(name: str, config: str, size, reps: int, args) -> dict:
    model, cfg, classes = build(config)
    with tempfile.TemporaryDirectory() as tmp:
        run = runners(model, cfg, classes, tmp, args)
        gen = np.random.default_rng(0)
        batch = gen.standard_normal((1, 3, *size)).astype(np.float32)
        metas = [dict(img_shape=size, scale_factor=(1.0, 1.0))]
        for backend in BACKENDS:  # warm-up
            run[backend](batch, metas)
        times = {b: [] for b in BACKENDS}
        for _ in range(reps):
            for backend in BACKENDS:  # interleaved rounds
                times[backend].append(run[backend](batch, metas))
    res = dict(size=list(size), session=run['_describe'], backends={})
    base = [t for t, _ in times['torch fp32']]
    bf16 = [t for t, _ in times['torch bf16']]
    for backend in BACKENDS:
        total = [t for t, _ in times[backend]]
        post = [p for _, p in times[backend] if p == p]
        res['backends'][backend] = dict(
            median_ms=1e3 * statistics.median(total),
            post_ms=1e3 * statistics.median(post) if post else None,
            vs_fp32=statistics.median(t / b for t, b in zip(total, base)),
            vs_bf16=statistics.median(t / b for t, b in zip(total, bf16)))
    return res


def table(results: dict) -> str:
    lines = [
        '| model | input | backend | ms / image | of which post-proc. ms '
        '| × torch fp32 | × torch bf16 |', '|---|---|---|---|---|---|---|'
    ]
    for name, res in results.items():
        for backend, r in res['backends'].items():
            post = '–' if r['post_ms'] is None else f'{r["post_ms"]:.1f}'
            lines.append(f'| {name} | {res["size"][0]}x{res["size"][1]} | '
                         f'{backend} | {r["median_ms"]:.1f} | {post} | '
                         f'{r["vs_fp32"]:.2f} | {r["vs_bf16"]:.2f} |')
    return '\n'.join(lines)


def verdicts(results: dict) -> list:
    """Plain sentences: where onnxruntime is slower than PyTorch."""
    out = []
    for name, res in results.items():
        for backend in ('ort', 'ort graph-nms'):
            r = res['backends'][backend]
            for ref, ratio in (('fp32', r['vs_fp32']), ('bf16', r['vs_bf16'])):
                word = 'SLOWER' if ratio > 1 else 'faster'
                out.append(f'{name}: {backend} is {word} than torch {ref} '
                           f'({ratio:.2f}x the time)')
    return out


def main() -> None:
    args = parse_args()
    reps = args.reps or (2 if args.quick else 10)
    torch.set_num_threads(args.threads)
    import onnxruntime
    load_start = os.getloadavg()[0]
    results_io.mark_start()
    results = {}
    for name, config, size in MODELS:
        size = QUICK_SIZES[name] if args.quick else size
        results[name] = measure(name, config, size, reps, args)
    header = (f'{time.strftime("%Y-%m-%d")}, {cpu_model()}, torch '
              f'{torch.__version__} ({torch.get_num_threads()} threads), '
              f'onnxruntime {onnxruntime.__version__}; session: '
              f'{results["demo"]["session"]}; {reps} interleaved rounds, '
              f'medians; load average {load_start:.1f} at the start, '
              f'{os.getloadavg()[0]:.1f} at the end')
    text = '\n'.join(['### Deployment speed', header, '',
                      table(results), ''] + verdicts(results))
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'deploy_speed.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(args.out, 'deploy_speed.json'), 'w') as f:
        json.dump(dict(header=header, reps=reps, results=results), f, indent=1)
    if args.results:
        path = results_io.write_results(
            args.results,
            dict(
                reps=reps,
                threads=args.threads,
                graph_opt=args.graph_opt,
                quick=args.quick,
                results=results,
                table=table(results),
                verdicts=verdicts(results)), sys.argv)
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
