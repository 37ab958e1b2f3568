"""Checks that an exported ``.onnx`` file detects what PyTorch detects.

    python tools/deployment/check_parity.py CONFIG CHECKPOINT MODEL.onnx
        [--images IMG ...] [--num-images 8] [--ap] [--threads 2]
        [--backend openvino] [--precision bf16] [--results NAME]

Each image (``--images``, else the first ``--num-images`` of the config's
test set) runs through mmdet on the original image (the config's test
pipeline and ``model.test_step``: the reference) and through onnxruntime
or OpenVINO (``--backend``; auto: OpenVINO for an IR ``.xml``), with the
file's metadata, the NumPy pre- and post-processing, or its in-graph
NMS. ``--precision bf16`` runs OpenVINO in bf16: its differences are
measured, not expected to pass. Printed: the largest relative difference
of the head's raw outputs (default export; PyTorch and the graph on the
same input batch), and per
image whether the detections are equal (same count, same labels, IoU ≥
0.999, scores within 1e-4). ``--ap`` runs the whole test set and
evaluates both with the config's test evaluator (COCO AP): the two APs
must agree to 0.001. Exit status 0 when everything agrees, 1 otherwise.

A fixed-size file (``export_onnx.py --shape H W``) pads every input up to
H x W where PyTorch pads only to a multiple of the ``pad_size_divisor``:
the features near the right and bottom border differ, and with them some
detections. The tool says so and prints the measured difference; such a
file passes only where the padding changes no detection.
``--results NAME`` writes the figures to benchmarks/results/NAME.json.
"""
import argparse
import copy
import os.path as osp
import sys
from typing import List, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.config import DictAction

from projects.focal_retina.engine.cli import (check_dataset_paths, check_file,
                                              fail, load_config)

AP_TOL = 1e-3
RAW_TOL = 1e-4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        'onnx', help='the exported .onnx file (or OpenVINO .xml)')
    parser.add_argument('--images', nargs='+', help='image files')
    parser.add_argument(
        '--num-images',
        type=int,
        default=8,
        help='test-set images to compare without --images')
    parser.add_argument(
        '--ap',
        action='store_true',
        help='COCO AP of both on the whole test set')
    parser.add_argument(
        '--threads', type=int, help='onnxruntime / OpenVINO and torch threads')
    parser.add_argument(
        '--backend',
        choices=('auto', 'onnxruntime', 'openvino'),
        default='auto',
        help='runs the file (auto: OpenVINO for .xml, onnxruntime for '
        '.onnx)')
    parser.add_argument(
        '--precision',
        choices=('fp32', 'bf16'),
        default='fp32',
        help='OpenVINO\'s inference precision')
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


def images_to_check(args, cfg) -> List[Tuple[str, int]]:
    """(path, img_id) pairs."""
    if args.images:
        for p in args.images:
            check_file(p, 'image')
        return [(p, i) for i, p in enumerate(args.images)]
    from mmdet.registry import DATASETS
    check_dataset_paths(cfg, ['test'])
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    num = len(dataset) if args.ap else min(args.num_images, len(dataset))
    infos = [dataset.get_data_info(i) for i in range(num)]
    return [(info['img_path'], info['img_id']) for info in infos]


def results_io():
    """benchmarks/results_io.py (benchmarks/ is no package)."""
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    import results_io as module
    return module


def write_figures(name: str, args, total: dict, raw_worst, ap, fixed,
                  padded_more: int, in_graph: bool, ok: bool, output: str,
                  backend: str, precision: str) -> str:
    """benchmarks/results/NAME.json through benchmarks/results_io.py."""
    return results_io().write_results(
        name,
        dict(
            config=args.config,
            checkpoint=args.checkpoint,
            onnx=args.onnx,
            backend=backend,
            precision=precision,
            input_shape=fixed,
            images_padded_more=padded_more if fixed else 0,
            postprocess_in_graph=in_graph,
            raw_max_relative_difference=raw_worst,
            ap=ap,
            ok=ok,
            output=output,
            **total), sys.argv)


def main() -> None:
    args = parse_args()
    for path, what in ((args.checkpoint, 'checkpoint'), (args.onnx,
                                                         'model file')):
        check_file(path, what)
    if args.ap and args.images:
        fail('--ap evaluates the config\'s test set; drop --images')
    if args.results:
        try:
            results_io().results_path(args.results)
        except ValueError as exc:
            fail(f'--results: {exc}')
    import mmcv
    import torch
    from mmdet.registry import METRICS
    from mmengine.structures import InstanceData

    from projects.focal_retina.deployment import DeployError, OnnxDetector
    from projects.focal_retina.deployment.export import build_detector
    from projects.focal_retina.deployment.parity import (detections_equal,
                                                         inference_pipeline,
                                                         match_detections,
                                                         max_relative_error,
                                                         pytorch_reference,
                                                         summarize)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.cfg_options)
    try:
        model, classes = build_detector(cfg, args.checkpoint, args.config)
        det = OnnxDetector(
            args.onnx,
            threads=args.threads,
            backend=args.backend,
            precision=args.precision)
    except DeployError as exc:
        fail(str(exc))
    if det.classes != classes:
        fail(f'{args.onnx} has classes {det.classes}, the checkpoint '
             f'{classes}: not an export of this model')
    fixed = det.meta.get('input_shape')
    pipeline = inference_pipeline(cfg)
    metrics = []
    if args.ap:
        dataset_meta = dict(classes=tuple(classes))
        for _ in range(2):
            metrics.append(METRICS.build(copy.deepcopy(cfg.test_evaluator)))
            metrics[-1].dataset_meta = dataset_meta
    stats, raw_errors, padded_more = [], [], 0
    div = det.meta['preprocess'].get('pad_size_divisor') or 1
    sources = images_to_check(args, cfg)
    for path, img_id in sources:
        bgr = mmcv.imread(path)
        # The reference: mmdet on the original image, padded only to the
        # divisor, whatever the file does to its input.
        sample, ref = pytorch_reference(model, pipeline, bgr, img_id, path)
        batch, metas = det.prepare([bgr])
        # PyTorch's batch: the resized image padded to the divisor only.
        own = [-(-v // div) * div for v in metas[0]['img_shape'][:2]]
        padded_more += list(batch.shape[2:]) != own
        if not det.in_graph:
            # The graph itself: PyTorch on the very batch the file gets.
            cls_o, box_o = det.run_raw(batch)
            with torch.no_grad():
                cls_t, box_t = model.bbox_head(
                    model.extract_feat(torch.from_numpy(batch)))
            raw_errors.append(
                max(
                    max_relative_error(o, t.numpy())
                    for o, t in zip(cls_o + box_o, [*cls_t, *box_t])))
        ours = det.run_batch(batch, metas)[0]
        stats.append(match_detections(ours, ref))
        if metrics:
            metrics[0].process({}, [sample.to_dict()])
            sample.pred_instances = InstanceData(**{
                k: torch.from_numpy(v)
                for k, v in ours.items()
            })
            metrics[1].process({}, [sample.to_dict()])
        if not detections_equal(stats[-1]):
            print(f'DIFFERS {path}: {stats[-1]}')
    total = summarize(stats)
    ok = total['images_differing'] == 0
    summary = []  # what is printed, also stored with --results

    def say(line: str) -> None:
        print(line)
        summary.append(line)

    say(f'{args.onnx} vs PyTorch on {total["images"]} images '
        f'({det.describe()}):')
    raw_worst = max(raw_errors) if raw_errors else None
    if raw_errors:
        ok &= raw_worst <= RAW_TOL
        say(f'  raw head outputs (same input): max relative difference '
            f'{raw_worst:.2e} (tolerance {RAW_TOL:g})')
    say(f'  detections: {total["detections_ours"]} vs '
        f'{total["detections_ref"]}, unmatched {total["unmatched"]}, '
        f'images differing {total["images_differing"]}, min IoU '
        f'{total["min_iou"]:.6f}, max score difference '
        f'{total["max_score_diff"]:.2e}')
    if fixed:
        say(f'  fixed input {fixed[0]}x{fixed[1]}: every image is padded '
            f'to it, PyTorch pads to a multiple of {div} only, and where '
            'that pads more, features near the right and bottom border '
            f'differ ({padded_more} of {total["images"]} images padded '
            f'more, {total["images_differing"]} differing above): an export '
            'without --shape gives PyTorch\'s detections')
    ap = None
    if metrics:
        res = [m.evaluate(len(sources)) for m in metrics]
        key = next(k for k in res[0] if k.endswith('bbox_mAP'))
        delta = abs(res[0][key] - res[1][key])
        # The evaluator rounds APs to 3 decimals: a difference of exactly
        # AP_TOL is 0.0010000000000000009 in floats.
        ok &= delta <= AP_TOL + 1e-9
        ap = {
            'key': key,
            'pytorch': res[0][key],
            det.backend: res[1][key],
            'abs_difference': delta
        }
        say(f'  COCO {key}: PyTorch {res[0][key]:.4f}, {det.backend} '
            f'{res[1][key]:.4f}, |difference| {delta:.4f} (tolerance '
            f'{AP_TOL:g})')
    say('PARITY OK' if ok else 'PARITY FAILED')
    if args.results:
        written = write_figures(args.results, args, total, raw_worst, ap,
                                fixed, padded_more, det.in_graph, bool(ok),
                                '\n'.join(summary), det.backend, det.precision)
        print(f'figures written to {written}')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
