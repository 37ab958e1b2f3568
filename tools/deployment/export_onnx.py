"""Exports a trained RetinaNet (backbone + FPN + head) to ONNX.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out model.onnx
        [--shape H W | --dynamic] [--opset 17] [--with-postprocess]
        [--cfg-options model.test_cfg.score_thr=0.3]
    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out model.xml

``--out model.xml`` writes an OpenVINO IR (``model.xml`` + ``model.bin``,
fp32, the same metadata) converted from the ONNX export, for OpenVINO;
OpenVINO also reads the ``.onnx`` file itself.

Batch and image size are dynamic by default; ``--shape H W`` fixes the
image size: inputs are padded up to it, where PyTorch pads only to the
``pad_size_divisor``, so detections near the right and bottom border
differ from PyTorch's; the tool prints the difference on a probe image.
The default graph returns the head's raw outputs, which the NumPy
post-processing of ``projects.focal_retina_runtime`` (mmdet's
``predict_by_feat`` with the config's ``test_cfg``) turns into detections;
``--with-postprocess`` puts decoding and ``NonMaxSuppression`` into the
graph (from opset 10; the raw graph from opset 9) (inputs ``images``,
``img_shapes``, ``scale_factors``; outputs ``batch_indices``, ``boxes``,
``scores``, ``labels``). Class names, normalisation, the test resize and
``test_cfg`` travel in the file's metadata: ``tools/infer.py model.onnx
IMAGES`` needs nothing else. See docs/deployment.md.
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import tempfile

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction

from projects.focal_retina.engine.cli import check_file, fail, load_config


def parse_args() -> argparse.Namespace:
    from projects.focal_retina.deployment.export import (DEFAULT_OPSET,
                                                         MIN_OPSET,
                                                         MIN_OPSET_POSTPROCESS)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        required=True,
        help='the .onnx file (or .xml: an OpenVINO IR converted from it)')
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='fixed input height and width (default: dynamic)')
    size.add_argument(
        '--dynamic',
        action='store_true',
        help='dynamic batch and image size (the default)')
    parser.add_argument(
        '--opset',
        type=int,
        default=DEFAULT_OPSET,
        help=f'ONNX opset (default {DEFAULT_OPSET}; at least {MIN_OPSET}, '
        f'{MIN_OPSET_POSTPROCESS} with --with-postprocess)')
    parser.add_argument(
        '--with-postprocess',
        action='store_true',
        help='decode and NMS inside the graph')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.test_cfg.score_thr=0.3')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    check_file(args.checkpoint, 'checkpoint')
    if not args.out.endswith(('.onnx', '.xml')):
        fail(f'--out {args.out!r}: expected a .onnx (or OpenVINO .xml) file '
             'name')
    if args.out.endswith('.xml'):
        try:
            import openvino  # noqa: F401
        except ImportError:
            fail('--out .xml needs openvino: pip install -e .[deploy]')
    try:
        import onnx  # noqa: F401
    except ImportError:
        fail('the onnx package is not installed: '
             'pip install -r requirements/deploy.txt')
    if args.shape and any(v < 32 for v in args.shape):
        fail(f'--shape {args.shape}: expected at least 32 x 32 px')
    from projects.focal_retina.deployment import DeployError
    from projects.focal_retina.deployment.export import (build_detector,
                                                         export_onnx,
                                                         fixed_size_difference,
                                                         onnx_to_openvino_ir)
    cfg = load_config(args.config, args.cfg_options)
    try:
        model, classes = build_detector(cfg, args.checkpoint, args.config)
        if args.shape:
            div = model.data_preprocessor.pad_size_divisor
            if any(v % div for v in args.shape):
                fail(f'--shape {args.shape}: expected multiples of the '
                     f'data_preprocessor\'s pad_size_divisor ({div})')
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        ir = args.out.endswith('.xml')
        tmp = tempfile.mkdtemp(prefix='.export_') if ir else None
        onnx_path = osp.join(tmp, 'model.onnx') if ir else args.out
        meta = export_onnx(
            model,
            cfg,
            classes,
            onnx_path,
            shape=args.shape,
            dynamic=not args.shape,
            opset=args.opset,
            with_postprocess=args.with_postprocess,
            source=dict(config=args.config, checkpoint=args.checkpoint))
        if ir:
            onnx_to_openvino_ir(onnx_path, args.out)
            shutil.rmtree(tmp, ignore_errors=True)
    except DeployError as exc:
        fail(str(exc))
    size = 'dynamic' if meta['input_shape'] is None else 'x'.join(
        map(str, meta['input_shape']))
    size_mib = osp.getsize(args.out) / 2**20
    if args.out.endswith('.xml'):
        size_mib += osp.getsize(osp.splitext(args.out)[0] + '.bin') / 2**20
    print(f'wrote {args.out} ({size_mib:.1f} MiB, '
          f'opset {args.opset}, input {size}, post-processing '
          f'{"in the graph" if args.with_postprocess else "in NumPy"})')
    print(f'  inputs {meta["inputs"]}, outputs {meta["outputs"]}')
    print(f'  classes {meta["classes"]}')
    if args.shape:
        # PyTorch pads to the divisor only: say what the fixed size costs.
        try:
            diff = fixed_size_difference(model, cfg, args.shape)
        except DeployError as exc:
            fail(str(exc))
        div = model.data_preprocessor.pad_size_divisor
        probe, resized = diff['probe_shape'], diff['resized_shape']
        print(f'note: every input is padded to {size} px; PyTorch pads to '
              f'a multiple of {div} only, so features near the right and '
              'bottom border differ. On a random probe image of '
              f'{probe[0]}x{probe[1]} px (resized to '
              f'{resized[0]}x{resized[1]}): scores differ by up to '
              f'{diff["max_score_diff"]:.4f}, detections '
              f'{diff["detections_fixed"]} vs PyTorch\'s '
              f'{diff["detections_ref"]} ({diff["unmatched"]} of PyTorch\'s '
              'without a partner, max score difference of the pairs '
              f'{diff["max_det_score_diff"]:.4f}). Measure your images with '
              'tools/deployment/check_parity.py; export without --shape '
              'for PyTorch\'s detections')


if __name__ == '__main__':
    main()
