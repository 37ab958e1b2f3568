"""Quantises an exported model to int8 and writes it only if its AP holds.

    python tools/deployment/quantize.py CONFIG MODEL.onnx --out MODEL_int8.xml
        [--calib-images 300] [--calib-split train | --calib-dir DIR]
        [--max-drop 0.01] [--keep-head-fp32] [--threads 1]
        [--num-images N] [--results NAME]

Calibration: ``--calib-images`` images (default 300, spread evenly over the
split) of the config's ``--calib-split`` dataset (default ``train``, so
that the model is not calibrated on the images it is judged on), or of a
folder (``--calib-dir``: unlabelled photos of your own), each read through
the config's test pipeline and normalised with the file's metadata: what
the runtime feeds the graph. NNCF quantises every convolution (per-channel
weights, per-tensor activations; ``--keep-head-fp32`` leaves the head's
last two in fp32).

The gate: the fp32 file and the int8 model run over the config's test set
(``--num-images``: its first N only) with the config's evaluator, both
APs are printed, and the int8 file is written only when its AP is at most
``--max-drop`` (default 0.01) below fp32's; otherwise nothing is written
and the exit status is 1. ``--out`` ending in ``.xml`` writes an OpenVINO
IR (run with OpenVINO), ending in ``.onnx`` an ONNX file with int8
QuantizeLinear / DequantizeLinear pairs (onnxruntime and OpenVINO both run
it); the evaluation uses that backend (``--backend`` to choose). Either
file keeps the fp32 file's metadata: ``tools/infer.py MODEL_int8.xml
IMAGES`` needs nothing else. See docs/deployment.md.
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.config import DictAction

from projects.focal_retina.engine.cli import (check_dataset_paths, check_file,
                                              fail, load_config)

MAX_CALIB = 1000  # NNCF's statistics need a few hundred at most


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file (test pipeline, data)')
    parser.add_argument('model', help='the exported fp32 .onnx file')
    parser.add_argument(
        '--out',
        required=True,
        help='the int8 file: .xml (OpenVINO IR) or .onnx (QDQ)')
    parser.add_argument(
        '--calib-images',
        type=int,
        default=300,
        help='calibration images (default 300)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        '--calib-split',
        default='train',
        choices=('train', 'val', 'test'),
        help="the config's dataset to calibrate on (default train)")
    source.add_argument(
        '--calib-dir', help='calibrate on the images of this folder')
    parser.add_argument(
        '--max-drop',
        type=float,
        default=0.01,
        help='largest AP drop (fp32 - int8) to accept (default 0.01)')
    parser.add_argument(
        '--keep-head-fp32',
        action='store_true',
        help='leave the head\'s last convolutions (retina_cls, '
        'retina_reg) in fp32')
    parser.add_argument(
        '--backend',
        choices=('auto', 'onnxruntime', 'openvino'),
        default='auto',
        help='runs both models for the AP (auto: OpenVINO for .xml, '
        'onnxruntime for .onnx)')
    parser.add_argument(
        '--num-images',
        type=int,
        help='evaluate on the first N test images only')
    parser.add_argument('--threads', type=int, help='inference threads')
    parser.add_argument(
        '--results',
        metavar='NAME',
        help='also write the figures to benchmarks/results/NAME.json')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    return parser.parse_args()


def results_io():
    """benchmarks/results_io.py (benchmarks/ is no package)."""
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    import results_io as module
    return module


def check_args(args) -> str:
    """Fails with one line on a bad option; returns the output format."""
    check_file(args.model, 'model file')
    if not args.model.lower().endswith('.onnx'):
        fail(f'MODEL {args.model!r}: expected the exported fp32 .onnx file')
    out = args.out.lower()
    if not out.endswith(('.xml', '.onnx')):
        fail(f'--out {args.out!r}: expected a .xml (OpenVINO IR) or .onnx '
             'file name')
    if osp.abspath(args.out) == osp.abspath(args.model):
        fail(f'--out {args.out!r} would overwrite the fp32 model')
    fmt = 'openvino' if out.endswith('.xml') else 'onnx'
    if fmt == 'openvino' and args.backend == 'onnxruntime':
        fail('--backend onnxruntime cannot run an OpenVINO IR (--out .xml)')
    if not 1 <= args.calib_images <= MAX_CALIB:
        fail(f'--calib-images {args.calib_images}: expected 1 to '
             f'{MAX_CALIB}')
    if not 0 <= args.max_drop <= 1:
        fail(f'--max-drop {args.max_drop}: expected an AP difference in '
             '[0, 1]')
    if args.num_images is not None and args.num_images < 1:
        fail(f'--num-images {args.num_images}: expected at least 1')
    if args.threads is not None and args.threads < 1:
        fail(f'--threads {args.threads}: expected at least 1')
    if args.results:
        try:
            results_io().results_path(args.results)
        except ValueError as exc:
            fail(f'--results: {exc}')
    return fmt


def move(src: str, out: str, fmt: str) -> None:
    """Moves the checked file (and an IR's .bin) to ``out``."""
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    if fmt == 'openvino':
        shutil.move(
            osp.splitext(src)[0] + '.bin',
            osp.splitext(out)[0] + '.bin')
    shutil.move(src, out)


def main() -> None:
    args = parse_args()
    fmt = check_args(args)
    cfg = load_config(args.config, args.cfg_options)
    from projects.focal_retina.deployment import DeployError, OnnxDetector
    from projects.focal_retina.deployment import quantize as q
    backend = args.backend if args.backend != 'auto' else (
        'openvino' if fmt == 'openvino' else 'onnxruntime')
    check_dataset_paths(cfg, ['test'])
    t0 = time.perf_counter()
    try:
        fp32 = OnnxDetector(args.model, threads=args.threads, backend=backend)
        if args.calib_dir:
            source = f'folder {args.calib_dir}'
            paths = q.folder_images(args.calib_dir)
        else:
            source = f'{args.calib_split} split of {args.config}'
            if args.calib_split != 'test':
                check_dataset_paths(cfg, [args.calib_split])
            paths = q.split_images(cfg, args.calib_split)
        paths = q.spread(paths, args.calib_images)
        print(f'calibrating on {len(paths)} images of the {source} '
              '(test pipeline, the file\'s normalisation)')
        inputs = q.calibration_inputs(paths, cfg, fp32.meta)
        model, kept = q.quantize(
            args.model, inputs, fmt, keep_head_fp32=args.keep_head_fp32)
    except DeployError as exc:
        fail(str(exc))
    meta = dict(
        fp32.meta,
        quantization=dict(
            tool='nncf',
            precision='int8',
            calibration=dict(source=source, images=len(paths)),
            kept_fp32=kept,
            fp32_model=osp.basename(args.model)))
    meta.pop('format', None)
    model = q.with_metadata(model, fmt, meta)
    took = time.perf_counter() - t0
    summary = q.precision_summary(model, fmt)
    others = ', '.join(f'{k} {v}' for k, v in summary['other_int8'].items())
    head = (' (the head\'s ' + '/'.join(q.HEAD_OUTPUT_CONVS) +
            ' kept in fp32)') if kept else ''
    precision = (f'int8 weights: '
                 f'{summary["convs"] - len(summary["fp32_convs"])} of '
                 f'{summary["convs"]} convolutions{head}; other operations '
                 f'with int8 inputs: {others or "none"}')
    print(precision)
    tmp = tempfile.mkdtemp(
        prefix='.quantize_', dir=osp.dirname(osp.abspath(args.out)))
    try:
        staged = osp.join(tmp, osp.basename(args.out))
        try:
            q.save(model, fmt, staged)
            int8 = OnnxDetector(staged, threads=args.threads, backend=backend)
        except DeployError as exc:
            fail(str(exc))
        print(f'quantised in {took:.0f} s; evaluating fp32 and int8 '
              f'({int8.describe()})')

        def progress(done: int, total: int) -> None:
            if done % 50 == 0 or done == total:
                print(f'  {done}/{total} images')

        res = q.evaluate(
            dict(fp32=fp32, int8=int8), cfg, args.num_images, progress)
        key = q.ap_key(res['fp32'])
        ap32, ap8 = res['fp32'][key], res['int8'][key]
        ok = q.gate(ap32, ap8, args.max_drop)
        lines = [
            precision, f'{key}: fp32 {ap32:.4f}, int8 {ap8:.4f}, drop '
            f'{ap32 - ap8:.4f} (at most {args.max_drop:g} accepted)',
            f'{"wrote " + args.out if ok else "REFUSED: not written"} '
            f'({"within" if ok else "beyond"} --max-drop; calibration: '
            f'{len(paths)} images of the {source}'
            f'{"; head output convolutions in fp32" if kept else ""})'
        ]
        if ok:
            move(staged, args.out, fmt)
        for line in lines[1:]:
            print(line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.results:
        path = results_io().write_results(
            args.results,
            dict(
                config=args.config,
                model=args.model,
                out=args.out,
                format=fmt,
                backend=backend,
                calibration=dict(source=source, images=len(paths)),
                kept_fp32=kept,
                precision=summary,
                max_drop=args.max_drop,
                key=key,
                ap=dict(fp32=ap32, int8=ap8, drop=ap32 - ap8),
                metrics=res,
                written=bool(ok),
                output='\n'.join(lines)), sys.argv)
        print(f'figures written to {path}')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
