"""Checks that an exported ``.onnx`` file detects what PyTorch detects.

    python tools/deployment/check_parity.py CONFIG CHECKPOINT MODEL.onnx
        [--images IMG ...] [--num-images 8] [--ap] [--threads 2]

Each image (``--images``, else the first ``--num-images`` of the config's
test set) runs through mmdet (the config's test pipeline and
``model.test_step``) and through onnxruntime (the file's metadata, the
NumPy pre- and post-processing, or its in-graph NMS). Printed: the largest
relative difference of the head's raw outputs (default export), and per
image whether the detections are equal (same count, same labels, IoU ≥
0.999, scores within 1e-4). ``--ap`` runs the whole test set and
evaluates both with the config's test evaluator (COCO AP): the two APs
must agree to 0.001. Exit status 0 when everything agrees, 1 otherwise.
"""
import argparse
import copy
import os.path as osp
import sys
from typing import List, Tuple

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction

from projects.focal_retina.engine.cli import (check_dataset_paths, check_file,
                                              fail, load_config)

AP_TOL = 1e-3
RAW_TOL = 1e-4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('onnx', help='the exported .onnx file')
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
        '--threads', type=int, help='onnxruntime and torch threads')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    return parser.parse_args()


def inference_pipeline(cfg):
    """The config's test pipeline on a decoded image, without annotations
    (as mmdet's DetInferencer builds it)."""
    from mmcv.transforms import Compose
    loader = cfg.get('test_dataloader') or {}
    steps = []
    for t in copy.deepcopy((loader.get('dataset') or {}).get('pipeline')
                           or cfg.get('test_pipeline')):
        kind = t['type'].split('.')[-1]
        if kind == 'LoadImageFromFile':
            t = dict(type='mmdet.LoadImageFromNDArray')
        elif kind == 'LoadAnnotations':
            continue
        steps.append(t)
    return Compose(steps)


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


def main() -> None:
    args = parse_args()
    for path, what in ((args.checkpoint, 'checkpoint'), (args.onnx,
                                                         'model file')):
        check_file(path, what)
    if args.ap and args.images:
        fail('--ap evaluates the config\'s test set; drop --images')
    import mmcv
    import torch
    from mmdet.registry import METRICS
    from mmengine.structures import InstanceData

    from projects.focal_retina.deployment import DeployError, OnnxDetector
    from projects.focal_retina.deployment.export import build_detector
    from projects.focal_retina.deployment.parity import (detections_equal,
                                                         match_detections,
                                                         max_relative_error,
                                                         summarize)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.cfg_options)
    try:
        model, classes = build_detector(cfg, args.checkpoint, args.config)
        det = OnnxDetector(args.onnx, threads=args.threads)
    except DeployError as exc:
        fail(str(exc))
    if det.classes != classes:
        fail(f'{args.onnx} has classes {det.classes}, the checkpoint '
             f'{classes}: not an export of this model')
    pipeline = inference_pipeline(cfg)
    metrics = []
    if args.ap:
        dataset_meta = dict(classes=tuple(classes))
        for _ in range(2):
            metrics.append(METRICS.build(copy.deepcopy(cfg.test_evaluator)))
            metrics[-1].dataset_meta = dataset_meta
    stats, raw_errors = [], []
    sources = images_to_check(args, cfg)
    for path, img_id in sources:
        bgr = mmcv.imread(path)
        data = pipeline(dict(img=bgr, img_id=img_id, img_path=path))
        with torch.no_grad():
            sample = model.test_step(
                dict(
                    inputs=[data['inputs']],
                    data_samples=[data['data_samples']]))[0]
        ref = {
            k: v.numpy()
            for k, v in sample.pred_instances.to_dict().items()
        }
        batch, metas = det.prepare([bgr])
        if not det.in_graph:
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
    print(f'{args.onnx} vs PyTorch on {total["images"]} images '
          f'({det.describe()}):')
    if raw_errors:
        worst = max(raw_errors)
        ok &= worst <= RAW_TOL
        print(f'  raw head outputs: max relative difference {worst:.2e} '
              f'(tolerance {RAW_TOL:g})')
    print(f'  detections: {total["detections_ours"]} vs '
          f'{total["detections_ref"]}, images differing '
          f'{total["images_differing"]}, min IoU {total["min_iou"]:.6f}, '
          f'max score difference {total["max_score_diff"]:.2e}')
    if metrics:
        ap = [m.evaluate(len(sources)) for m in metrics]
        key = next(k for k in ap[0] if k.endswith('bbox_mAP'))
        delta = abs(ap[0][key] - ap[1][key])
        ok &= delta <= AP_TOL
        print(f'  COCO {key}: PyTorch {ap[0][key]:.4f}, onnxruntime '
              f'{ap[1][key]:.4f}, |difference| {delta:.4f} (tolerance '
              f'{AP_TOL:g})')
    print('PARITY OK' if ok else 'PARITY FAILED')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
