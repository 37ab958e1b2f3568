"""One run: a method, a seed and an optimizer trained on the regime's
in-memory data, validated with COCO AP, recorded in ``run.json`` and
reused when the same run is asked for again.

The loop is the one mmengine's ``IterBasedTrainLoop`` runs for
``tools/train.py`` -- the model's data preprocessor, ``model.loss``,
``parse_losses``, backward, gradient-norm clipping as the config's
``clip_grad`` asks, the optimizer and the config's parameter schedulers
(built by mmengine from the same config) -- written out so that a run of
500 iterations costs no Runner start-up, dataloader workers or image
decoding, and so that every iteration's losses, gradient norm and lr are
kept (the divergence curves). A non-finite loss stops the run: it counts
as diverged, AP 0 (the paper's "fails").
"""
import contextlib
import io
import json
import math
import os
import os.path as osp
import time
from typing import Dict, List, Optional

import numpy as np

from .methods import METHODS
from .regimes import (Regime, coco_ground_truth, load_data, model_config,
                      optimizer_line)

# Part of every run's key: a change of the loop retrains, not reuses.
LOOP_VERSION = 1
_DATA: Dict[str, Dict] = {}  # per worker process: data path -> splits
_GT: Dict[str, object] = {}  # data path -> pycocotools COCO of val


def run_key(regime: Regime, name: str, seed: int, optimizer: str, iters: int,
            validate: bool) -> Dict:
    """What decides a run's result: a finished run with the same key is
    reused."""
    from dataclasses import asdict
    return dict(
        loop=LOOP_VERSION,
        regime=asdict(regime),
        method=name,
        overrides=METHODS[name].overrides,
        seed=seed,
        optimizer=optimizer,
        iters=iters,
        validate=validate)


def work_dir_of(work_root: str, name: str, seed: int, label: str,
                validate: bool) -> str:
    """``<name>_s<seed>``; a divergence-check run adds its variant."""
    kind = '' if validate else f'_curve_{label}'
    return osp.join(work_root, f'{name}_s{seed}{kind}')


def reusable(work_dir: str, key: Dict) -> Optional[Dict]:
    """The run.json of ``work_dir`` if it finished with this key."""
    path = osp.join(work_dir, 'run.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        record = json.load(f)
    # through JSON, as stored (tuples become lists)
    if record.get('key') != json.loads(json.dumps(key)):
        return None
    record.setdefault('finished_at', osp.getmtime(path))
    return record


def _splits(path: str) -> Dict:
    if path not in _DATA:
        _DATA[path] = load_data(path)
    return _DATA[path]


def _batch(model, images: np.ndarray, objects, indices, training: bool):
    """The data preprocessor's output for ``indices`` of a split."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    h, w = images.shape[1:3]
    inputs, samples = [], []
    for i in indices:
        inputs.append(torch.from_numpy(images[i]).permute(2, 0, 1))
        sample = DetDataSample(
            metainfo=dict(
                img_id=int(i) + 1,
                img_shape=(h, w),
                ori_shape=(h, w),
                scale_factor=(1.0, 1.0)))
        if training:
            boxes, labels = objects[i]
            sample.gt_instances = InstanceData(
                bboxes=torch.from_numpy(boxes),
                labels=torch.from_numpy(labels))
        samples.append(sample)
    return model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), training)


def coco_ap(gt, detections: List[Dict]) -> Dict[str, float]:
    """COCO AP, AP50, AP75 (fractions) of ``detections`` (pycocotools);
    0 with no detection, as the demo's ZeroIfEmptyCocoMetric."""
    from pycocotools.cocoeval import COCOeval
    if not detections:
        return dict(AP=0.0, AP50=0.0, AP75=0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {
        k: max(0.0, float(ev.stats[i]))
        for i, k in enumerate(('AP', 'AP50', 'AP75'))
    }


def validate(model, data_path: str, batch: int = 16) -> Dict[str, float]:
    """COCO AP of ``model`` on the regime's val split."""
    import torch
    from pycocotools.coco import COCO
    images, objects = _splits(data_path)['val']
    if data_path not in _GT:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = coco_ground_truth((images, objects))
            gt.createIndex()
        _GT[data_path] = gt
    model.eval()
    detections = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            idx = range(start, min(start + batch, len(images)))
            data = _batch(model, images, objects, idx, False)
            results = model.predict(
                data['inputs'], data['data_samples'], rescale=False)
            for i, result in zip(idx, results):
                pred = result.pred_instances
                for (x0, y0, x1,
                     y1), label, score in zip(pred.bboxes.tolist(),
                                              pred.labels.tolist(),
                                              pred.scores.tolist()):
                    detections.append(
                        dict(
                            image_id=i + 1,
                            category_id=label + 1,
                            bbox=[x0, y0, x1 - x0, y1 - y0],
                            score=score))
    model.train()
    return coco_ap(_GT[data_path], detections)


def build(regime: Regime, name: str, optimizer: str, seed: int, iters: int):
    """The model (seeded), its optim wrapper and the config's schedulers."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    from mmengine.runner import set_random_seed

    import projects.focal_retina  # noqa: F401  (registers components)
    register_all_modules(init_default_scope=True)
    cfg = model_config(regime, optimizer)
    cfg.merge_from_dict(METHODS[name].overrides)
    set_random_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    schedulers = [
        PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper, end=iters))
        for s in cfg.param_scheduler
    ]
    clip = cfg.optim_wrapper.get('clip_grad') or {}
    max_norm = float(clip.get('max_norm', math.inf))
    torch.manual_seed(seed)
    return model, wrapper, schedulers, max_norm


def train_one(job: Dict) -> Dict:
    """Trains and (``job['validate']``) validates one run; writes and
    returns its record.

    Args:
        job: ``regime`` (a Regime), ``name``, ``seed``, ``optimizer``,
            ``iters``, ``validate``, ``data`` (the cache of
            regimes.make_data), ``work_dir``, ``key`` (:func:`run_key`).
    """
    import torch
    regime: Regime = job['regime']
    iters, seed = job['iters'], job['seed']
    start, cpu_start = time.time(), time.process_time()
    model, wrapper, schedulers, max_norm = build(regime, job['name'],
                                                 job['optimizer'], seed, iters)
    images, objects = _splits(job['data'])['train']
    # each seed its own order; epochs concatenated
    rng = np.random.default_rng([seed, 7])
    need = iters * regime.batch
    order = np.concatenate([
        rng.permutation(len(images)) for _ in range(-(-need // len(images)))
    ])[:need]
    params = [p for p in model.parameters() if p.requires_grad]
    curves: Dict[str, List[Optional[float]]] = dict(
        loss=[], loss_cls=[], loss_bbox=[], grad_norm=[], lr=[])
    evals: List[Dict] = []
    points = set(regime.eval_points()) if job['validate'] else set()
    status, message, train_s, eval_s = 'ok', '', 0.0, 0.0
    train_cpu_s = 0.0  # CPU time of this process: a load-free cost
    for it in range(1, iters + 1):
        t, c = time.time(), time.process_time()
        idx = order[(it - 1) * regime.batch:it * regime.batch]
        data = _batch(model, images, objects, idx, True)
        losses = model.loss(data['inputs'], data['data_samples'])
        loss, log = model.parse_losses(losses)
        for k in ('loss', 'loss_cls', 'loss_bbox'):
            v = float(log[k].detach()) if k in log else None
            curves[k].append(v if v is None or math.isfinite(v) else None)
        curves['lr'].append(wrapper.optimizer.param_groups[0]['lr'])
        if not torch.isfinite(loss):
            curves['grad_norm'].append(None)
            status = 'diverged'
            message = f'non-finite loss at iteration {it}'
            break
        loss.backward()
        # mmengine's OptimWrapper clips with this same call; inf: no clip
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        curves['grad_norm'].append(norm if math.isfinite(norm) else None)
        wrapper.optimizer.step()
        wrapper.optimizer.zero_grad()
        for s in schedulers:
            s.step()
        train_s += time.time() - t
        train_cpu_s += time.process_time() - c
        if it in points:
            t = time.time()
            evals.append(dict(iter=it, **validate(model, job['data'])))
            eval_s += time.time() - t
    if status == 'diverged':
        metrics = dict(AP=0.0, AP50=0.0, AP75=0.0)  # the paper's "fails"
    else:
        metrics = evals[-1] if evals else None
    record = dict(
        key=job['key'],
        method=job['name'],
        seed=seed,
        optimizer=job['optimizer'],
        optimizer_line=optimizer_line(regime, job['optimizer']),
        status=status,
        message=message,
        iters_done=len(curves['loss']),
        metrics=metrics,
        evals=evals,
        curves=curves,
        wall_s=time.time() - start,
        finished_at=time.time(),
        cpu_s=time.process_time() - cpu_start,
        train_s_per_iter=train_s / max(1, len(curves['loss'])),
        train_cpu_s_per_iter=train_cpu_s / max(1, len(curves['loss'])),
        eval_s=eval_s,
        threads=torch.get_num_threads(),
        work_dir=job['work_dir'])
    os.makedirs(job['work_dir'], exist_ok=True)
    path = osp.join(job['work_dir'], 'run.json')
    with open(path + '.tmp', 'w') as f:
        json.dump(record, f, allow_nan=False)
    os.replace(path + '.tmp', path)  # a run is finished when this exists
    return record


def init_worker(threads: int) -> None:
    """A worker process of the pool: ``threads`` torch threads; mmengine's
    INFO lines (every parameter's init) silenced."""
    import logging

    import torch
    from mmengine.logging import MMLogger
    torch.set_num_threads(threads)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
