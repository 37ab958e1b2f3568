"""Deployment backends vs PyTorch eager, per image, on the CPU.

    python benchmarks/deploy_speed.py [--quick] [--reps 10] [--threads 2]
        [--graph-opt all] [--no-memory] [--out work_dirs/deploy_speed]

Two models, randomly initialised (``init_cfg=None``; the speed does not
depend on the weights): the demo model (configs/demo/) at 256x256 and
RetinaNet R-50-FPN (configs/retina_r50_fpn_1x.py) at 608x800. Per image,
from the normalised input tensor to detections in image pixels:

* ``torch fp32``: forward + mmdet's ``predict_by_feat``;
* ``torch bf16``: the forward under ``torch.autocast('cpu', bfloat16)``
  (what ``--amp`` means on the CPU here), the same post-processing;
* ``ort``: the default export in onnxruntime + the NumPy post-processing;
* ``ort graph-nms``: the ``--with-postprocess`` export (one session run);
* ``ort int8``: the export quantised by onnxruntime's ``quantize_static``
  (``tools/deployment/quantize.py --out MODEL.onnx``), onnxruntime;
* ``openvino fp32`` / ``openvino bf16``: the default export in OpenVINO,
  precision hint f32 / bf16, + the NumPy post-processing;
* ``openvino int8``: the export quantised by NNCF into an IR
  (``quantize.py --out MODEL.xml``), OpenVINO, precision hint f32.

The int8 files here are calibrated on random inputs: their structure, and
so their speed, is what real calibration gives; their accuracy is
measured by ``tools/deployment/quantize.py`` on trained models.

The classification bias is set to -3 (scores ≈ 0.05) so that every level
fills its ``nms_pre`` candidates, as a trained model's P3/P4 do on a busy
image; the post-processing time is printed separately. Backends run
interleaved, one image each per round, after a warm-up; medians and the
median of the per-round ratios are printed. Peak memory: the peak
resident set of a separate process that loads only that backend's model
(PyTorch: builds the model from the config) and runs one image, libraries
included (``--no-memory`` skips it). ``--quick`` (the test suite's smoke
run): small inputs, 2 rounds.
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np

from benchmarks import results_io
from benchmarks.machine import cpu_model

MODELS = [('demo', 'configs/demo/retina_r18_fpn_shapes.py', (256, 256)),
          ('R-50', 'configs/retina_r50_fpn_1x.py', (608, 800))]
QUICK_SIZES = dict(demo=(128, 128), **{'R-50': (128, 160)})
# backend → (runtime, file, precision); the torch rows have no file.
BACKENDS: Dict[str, Tuple[str, str, str]] = {
    'torch fp32': ('torch', '', 'fp32'),
    'torch bf16': ('torch', '', 'bf16'),
    'ort': ('onnxruntime', 'fp32.onnx', 'fp32'),
    'ort graph-nms': ('onnxruntime', 'graph_nms.onnx', 'fp32'),
    'ort int8': ('onnxruntime', 'int8.onnx', 'fp32'),
    'openvino fp32': ('openvino', 'fp32.onnx', 'fp32'),
    'openvino bf16': ('openvino', 'fp32.onnx', 'bf16'),
    'openvino int8': ('openvino', 'int8.xml', 'fp32'),
}
# One random batch: the quantisers place the same int8 operations whatever
# the calibration data, and only those decide the speed.
CALIB_BATCHES = 1
TARGETS = {'demo': 0.30, 'R-50': 0.40}  # × torch fp32, end to end


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='smoke run')
    parser.add_argument('--reps', type=int, help='rounds (default 10)')
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='torch, onnxruntime and OpenVINO threads')
    parser.add_argument(
        '--graph-opt',
        default='all',
        choices=('disable', 'basic', 'extended', 'all'),
        help='onnxruntime graph optimisation level')
    parser.add_argument(
        '--no-memory',
        action='store_true',
        help='skip the peak-memory processes')
    parser.add_argument('--out', default='work_dirs/deploy_speed')
    # One backend alone in this process, for its peak memory (internal).
    parser.add_argument('--child', nargs=5, help=argparse.SUPPRESS)
    results_io.add_argument(parser)
    return parser.parse_args()


def build(config: str):
    import torch
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


def write_files(model, cfg, classes, size, tmp: str) -> None:
    """The exported files of :data:`BACKENDS` in ``tmp``."""
    from projects.focal_retina.deployment import quantize as q
    from projects.focal_retina.deployment.export import export_onnx
    fp32 = osp.join(tmp, 'fp32.onnx')
    export_onnx(model, cfg, classes, fp32)
    export_onnx(
        model,
        cfg,
        classes,
        osp.join(tmp, 'graph_nms.onnx'),
        with_postprocess=True)
    from projects.focal_retina_runtime.metadata import read_onnx_metadata
    meta = read_onnx_metadata(fp32)
    gen = np.random.default_rng(1)
    calib = [
        gen.standard_normal((1, 3, *size)).astype(np.float32)
        for _ in range(CALIB_BATCHES)
    ]
    for fmt, name in (('onnx', 'int8.onnx'), ('openvino', 'int8.xml')):
        model_q, _ = q.quantize(fp32, calib, fmt, bias_correction=False)
        model_q = q.with_metadata(model_q, fmt, {
            k: v
            for k, v in meta.items() if k != 'format'
        })
        q.save(model_q, fmt, osp.join(tmp, name))


def torch_runner(model, bf16: bool) -> Callable:
    import torch

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


def file_runner(det) -> Callable:
    from projects.focal_retina_runtime import predict_by_feat

    def run(batch, metas):
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


def open_file(backend: str, tmp: str, args):
    from projects.focal_retina_runtime import OnnxDetector
    runtime, name, precision = BACKENDS[backend]
    return OnnxDetector(
        osp.join(tmp, name),
        threads=args.threads,
        graph_opt=args.graph_opt,
        backend=runtime,
        precision=precision)


def peak_memory(backend: str, config: str, tmp: str, size, args) -> float:
    """Peak RSS (MiB) of a process running ``backend`` alone on one image
    (see the module's docstring)."""
    out = subprocess.run([
        sys.executable,
        osp.abspath(__file__), '--child', backend, config, tmp,
        str(size[0]),
        str(size[1]), '--threads',
        str(args.threads), '--graph-opt', args.graph_opt
    ],
                         capture_output=True,
                         text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f'memory process of {backend!r} failed: '
                           f'{out.stderr[-2000:]}')
    return float(out.stdout.strip().splitlines()[-1])


def child(args) -> None:
    """``--child BACKEND CONFIG DIR H W``: one image, then the peak RSS in
    MiB on the last line."""
    backend, config, tmp, h, w = args.child
    size = (int(h), int(w))
    batch = np.random.default_rng(0).standard_normal(
        (1, 3, *size)).astype(np.float32)
    metas = [dict(img_shape=size, scale_factor=(1.0, 1.0))]
    if BACKENDS[backend][0] == 'torch':
        import torch
        torch.set_num_threads(args.threads)
        model, _, _ = build(config)
        run = torch_runner(model, BACKENDS[backend][2] == 'bf16')
    else:  # torch-free, as a deployment process is
        run = file_runner(open_file(backend, tmp, args))
    run(batch, metas)
    print(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak resident set (``VmHWM``), MiB. Not
    ``getrusage``'s ``ru_maxrss``: Linux carries that over ``exec`` from
    the forked parent, so every child would report the benchmark's own."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def note(line: str) -> None:
    """Progress, on stderr (stdout is the report)."""
    print(line, file=sys.stderr, flush=True)


def measure(name: str, config: str, size, reps: int, args) -> dict:
    t0 = time.perf_counter()
    model, cfg, classes = build(config)
    with tempfile.TemporaryDirectory() as tmp:
        write_files(model, cfg, classes, size, tmp)
        note(f'{name}: model built, exported and quantised in '
             f'{time.perf_counter() - t0:.0f} s')
        t0 = time.perf_counter()
        run = {}
        describe = {}
        for backend, (runtime, _, _) in BACKENDS.items():
            if runtime == 'torch':
                run[backend] = torch_runner(model,
                                            BACKENDS[backend][2] == 'bf16')
                continue
            det = open_file(backend, tmp, args)
            run[backend] = file_runner(det)
            describe[runtime] = det.describe().replace(
                'precision hint bf16', 'precision hint f32 or bf16')
        gen = np.random.default_rng(0)
        batch = gen.standard_normal((1, 3, *size)).astype(np.float32)
        metas = [dict(img_shape=size, scale_factor=(1.0, 1.0))]
        for backend in BACKENDS:  # warm-up
            run[backend](batch, metas)
        times = {b: [] for b in BACKENDS}
        for _ in range(reps):
            for backend in BACKENDS:  # interleaved rounds
                times[backend].append(run[backend](batch, metas))
        run.clear()  # the sessions go before the memory processes run
        note(f'{name}: timed in {time.perf_counter() - t0:.0f} s')
        t0 = time.perf_counter()
        memory = {} if args.no_memory else {
            b: peak_memory(b, config, tmp, size, args)
            for b in BACKENDS
        }
    if memory:
        note(f'{name}: peak memory in {time.perf_counter() - t0:.0f} s')
    res = dict(
        size=list(size),
        session=describe['onnxruntime'],
        openvino=describe['openvino'],
        backends={})
    base = [t for t, _ in times['torch fp32']]
    bf16 = [t for t, _ in times['torch bf16']]
    for backend in BACKENDS:
        total = [t for t, _ in times[backend]]
        post = [p for _, p in times[backend] if p == p]
        res['backends'][backend] = dict(
            median_ms=1e3 * statistics.median(total),
            post_ms=1e3 * statistics.median(post) if post else None,
            vs_fp32=statistics.median(t / b for t, b in zip(total, base)),
            vs_bf16=statistics.median(t / b for t, b in zip(total, bf16)),
            peak_rss_mib=memory.get(backend))
    return res


def table(results: dict) -> str:
    lines = [
        '| model | input | backend | ms / image | of which post-proc. ms '
        '| × torch fp32 | × torch bf16 | peak RSS MiB |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for name, res in results.items():
        for backend, r in res['backends'].items():
            post = '–' if r['post_ms'] is None else f'{r["post_ms"]:.1f}'
            mem = '–' if r.get('peak_rss_mib') is None else \
                f'{r["peak_rss_mib"]:.0f}'
            lines.append(f'| {name} | {res["size"][0]}x{res["size"][1]} | '
                         f'{backend} | {r["median_ms"]:.1f} | {post} | '
                         f'{r["vs_fp32"]:.2f} | {r["vs_bf16"]:.2f} | '
                         f'{mem} |')
    return '\n'.join(lines)


def verdicts(results: dict) -> list:
    """Plain sentences: each exported backend against PyTorch, and the
    fastest one against its target."""
    out = []
    for name, res in results.items():
        for backend, r in res['backends'].items():
            if backend.startswith('torch'):
                continue
            for ref, ratio in (('fp32', r['vs_fp32']), ('bf16', r['vs_bf16'])):
                word = 'SLOWER' if ratio > 1 else 'faster'
                out.append(f'{name}: {backend} is {word} than torch {ref} '
                           f'({ratio:.2f}x the time)')
    return out


def best(results: dict) -> dict:
    """Per model, the fastest exported backend and whether it meets
    :data:`TARGETS`."""
    out = {}
    for name, res in results.items():
        rows = {
            b: r
            for b, r in res['backends'].items() if not b.startswith('torch')
        }
        fastest = min(rows, key=lambda b: rows[b]['vs_fp32'])
        ratio = rows[fastest]['vs_fp32']
        out[name] = dict(
            backend=fastest,
            vs_fp32=ratio,
            target=TARGETS.get(name),
            met=TARGETS.get(name) is not None and ratio <= TARGETS[name])
    return out


def versions() -> dict:
    """The backends' versions (results_io's meta block names the rest)."""
    import importlib.metadata
    found = {}
    for dist in ('openvino', 'nncf', 'onnxruntime'):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    import torch
    reps = args.reps or (2 if args.quick else 10)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    results_io.mark_start()
    results = {}
    for name, config, size in MODELS:
        size = QUICK_SIZES[name] if args.quick else size
        results[name] = measure(name, config, size, reps, args)
    lead = best(results)
    vers = versions()
    header = (f'{time.strftime("%Y-%m-%d")}, {cpu_model()}, torch '
              f'{torch.__version__} ({torch.get_num_threads()} threads), '
              f'onnxruntime {vers.get("onnxruntime")}, OpenVINO '
              f'{vers.get("openvino")}, NNCF {vers.get("nncf")}; sessions: '
              f'{results["demo"]["session"]}; {results["demo"]["openvino"]}'
              f'; {reps} interleaved rounds, medians; load average '
              f'{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at '
              'the end')
    summary = [
        f'{name}: fastest exported backend {b["backend"]} at '
        f'{b["vs_fp32"]:.2f}x torch fp32\'s time (target <= '
        f'{b["target"]:.2f}x: {"met" if b["met"] else "NOT met"})'
        for name, b in lead.items()
    ]
    text = '\n'.join(['### Deployment speed', header, '',
                      table(results), ''] + verdicts(results) + summary)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'deploy_speed.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(args.out, 'deploy_speed.json'), 'w') as f:
        json.dump(
            dict(header=header, reps=reps, results=results, best=lead),
            f,
            indent=1)
    if args.results:
        path = results_io.write_results(
            args.results,
            dict(
                reps=reps,
                threads=args.threads,
                graph_opt=args.graph_opt,
                quick=args.quick,
                backend_versions=vers,
                results=results,
                best=lead,
                table=table(results),
                verdicts=verdicts(results),
                summary=summary), sys.argv)
        print(f'results written to {path}')


if __name__ == '__main__':
    main()
