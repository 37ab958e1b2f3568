"""Regimes: the data, the model and the schedule every method shares.

A regime is sized so that the whole table -- 12 methods x 3 seeds x 500
iterations -- fits in the time budget of two CPU cores while the
imbalance stays the paper's: the ratio that matters is negatives per
positive *anchor*, not the number of pixels. One small object (10-16 px)
in a 128 px image meets ~2 positive anchors (IoU >= .5, plus its best
anchor) among the 3,069 anchors of P3-P7, > 1000 negatives per positive,
measured on the training data by ``benchmarks/imbalance.py``
(:func:`measure`). The images are the synthetic shapes of
``projects/focal_retina/datasets/synthetic_shapes.py`` rendered in memory
(``render_image``: no files, no decoding), once, into a cache beside the
runs.

The model is the demo RetinaNet of ``configs/demo/retina_r18_fpn_shapes.py``
(ResNet-18 from scratch, FPN P3-P7, 2-conv GN towers, anchors of 2x the
stride, IoU .5 / .4, the paper's normaliser, FocalFamilyLoss) narrowed:
ResNet-18 with 16 base channels (16-128 per stage instead of 64-512), a
32-channel FPN and towers, GN in 8 groups. Its optimizer and schedule are
the demo's (AdamW lr 1e-3, wd .05, clip 10; warm-up from lr / 10 over 10 %,
lr / 10 at 76 % and 92 %); ``sgd`` is the paper's (momentum .9, wd 1e-4,
no clipping, lr 0.01 x batch / 16).
"""
import hashlib
import json
import os
import os.path as osp
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Tuple

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'retina_r18_fpn_shapes.py')
SGD_BASE_LR = 0.01  # the paper's, for 16 images per iteration
OPTIMIZERS = ('adamw', 'sgd')


@dataclass(frozen=True)
class Regime:
    """Data, model and schedule of a mini Table 1 (stored in the results).

    Args:
        name: Key of :data:`REGIMES`.
        img_size: Side of the square images (the model's input, no resize).
        min_objects, max_objects: Objects per image.
        min_size, max_size: Object side in pixels.
        clutter: Distractor strokes per image.
        num_train: Training images (rendered once; batches shuffled per
            seed).
        num_val: Validation images (COCO AP on all of them).
        data_seed: Seed of the images (the same for every run).
        batch: Images per iteration.
        iters: Iterations of every run.
        eval_every: Validation every this many iterations (and at the end),
            to show whether AP still rises at the end.
        curve_iters: Iterations of the no-prior divergence check under the
            second optimizer (loss curves only, no validation).
        base_channels: ResNet-18's first-stage width (the demo: 64).
        fpn_channels: FPN and tower width (the demo: 128).
        gn_groups: GroupNorm groups of the towers (the demo: 32).
        score_thr: Test score threshold (the demo's .05; 0 for smoke runs
            of untrained models).
        max_per_img: Detections kept per image (the demo: 100). With one
            object per image 20 drop only each image's lowest-scored
            boxes, and keep the validation of a model that still scores
            every anchor high (no prior, DR's prior .5) from costing more
            than its training.
    """
    name: str
    img_size: int = 128
    min_objects: int = 1
    max_objects: int = 1
    min_size: int = 10
    max_size: int = 16
    clutter: int = 6
    num_train: int = 2000
    num_val: int = 200
    data_seed: int = 0
    batch: int = 8
    iters: int = 500
    eval_every: int = 125
    curve_iters: int = 100
    base_channels: int = 16
    fpn_channels: int = 32
    gn_groups: int = 8
    score_thr: float = 0.05
    max_per_img: int = 20

    def shapes_spec(self):
        """The ShapesSpec of the images (num_train / num_val, seed...)."""
        from projects.focal_retina.datasets import ShapesSpec
        return ShapesSpec(
            seed=self.data_seed,
            num_train=self.num_train,
            num_val=self.num_val,
            img_size=self.img_size,
            min_objects=self.min_objects,
            max_objects=self.max_objects,
            min_size=self.min_size,
            max_size=self.max_size,
            clutter=self.clutter)

    def eval_points(self) -> List[int]:
        """Iterations after which the run is validated (the last always)."""
        points = list(range(self.eval_every, self.iters, self.eval_every))
        return points + [self.iters]

    def describe(self) -> str:
        objects = (f'{self.min_objects}'
                   if self.min_objects == self.max_objects else
                   f'{self.min_objects}-{self.max_objects}')
        return (f'{self.img_size} px images with {objects} object(s) of '
                f'{self.min_size}-{self.max_size} px ({self.num_train} '
                f'train / {self.num_val} val, in memory); ResNet-18 '
                f'{self.base_channels}-{8 * self.base_channels} channels, '
                f'FPN and towers {self.fpn_channels}; {self.iters} '
                f'iterations x {self.batch} images, validation every '
                f'{self.eval_every}')


REGIMES: Dict[str, Regime] = {
    # The table's regime (sized by a probe of s / iteration, see the docs)
    'tiny':
    Regime('tiny'),
    # --quick: a check that it all runs (not a measurement)
    'quick':
    Regime(
        'quick',
        num_train=16,
        num_val=8,
        batch=2,
        iters=6,
        eval_every=3,
        curve_iters=3,
        score_thr=0.0),
}


def with_iters(regime: Regime, iters: int) -> Regime:
    """``regime`` with another budget (validation points kept in step)."""
    if iters == regime.iters:
        return regime
    every = max(1, round(regime.eval_every * iters / regime.iters))
    return replace(regime, iters=iters, eval_every=every)


def sgd_lr(batch: int) -> float:
    """The paper's lr 0.01 for 16 images, scaled linearly to ``batch``."""
    return SGD_BASE_LR * batch / 16


def model_config(regime: Regime, optimizer: str = 'adamw'):
    """The regime's model, optimizer and schedule as an mmengine Config
    (the demo config narrowed; no dataloaders: the data is in memory)."""
    from mmengine.config import Config

    from projects.focal_retina.engine.cli import read_config
    demo = read_config(DEMO)
    b, c = regime.base_channels, regime.fpn_channels
    cfg = Config(
        dict(
            model=demo.model,
            optim_wrapper=demo.optim_wrapper,
            param_scheduler=demo.param_scheduler))
    cfg.merge_from_dict({
        'model.backbone.base_channels': b,
        'model.neck.in_channels': [b, 2 * b, 4 * b, 8 * b],
        'model.neck.out_channels': c,
        'model.bbox_head.in_channels': c,
        'model.bbox_head.feat_channels': c,
        'model.bbox_head.norm_cfg.num_groups': regime.gn_groups,
        'model.test_cfg.score_thr': regime.score_thr,
        'model.test_cfg.max_per_img': regime.max_per_img,
    })
    if regime.gn_groups == 0:  # the paper's towers: no normalisation
        cfg.model.bbox_head.norm_cfg = None
    if optimizer == 'sgd':
        cfg.merge_from_dict({
            'optim_wrapper.optimizer':
            dict(
                _delete_=True,
                type='SGD',
                lr=sgd_lr(regime.batch),
                momentum=0.9,
                weight_decay=0.0001),
            'optim_wrapper.clip_grad':
            None,
        })
    elif optimizer != 'adamw':
        raise ValueError(f'optimizer {optimizer!r}: expected one of '
                         f'{OPTIMIZERS}')
    return cfg


def optimizer_line(regime: Regime, optimizer: str) -> str:
    if optimizer == 'sgd':
        return (f'SGD lr {sgd_lr(regime.batch):g} (0.01 x {regime.batch} / '
                '16), momentum 0.9, wd 1e-4, no clipping')
    return 'AdamW lr 1e-3, wd 0.05, gradient-norm clip 10'


# (images uint8 N x H x W x 3 BGR, per image (boxes N_i x 4 x0 y0 x1 y1,
# labels N_i))
Split = Tuple[np.ndarray, List[Tuple[np.ndarray, np.ndarray]]]


def render_split(regime: Regime, split: str) -> Split:
    """Renders the ``split`` images of ``regime`` (deterministic)."""
    from projects.focal_retina.datasets.synthetic_shapes import render_image
    spec = regime.shapes_spec()
    num = spec.num_train if split == 'train' else spec.num_val
    images = np.empty((num, spec.img_size, spec.img_size, 3), np.uint8)
    objects = []
    for i in range(num):
        images[i], objs = render_image(spec, split, i)
        boxes = np.array([[x, y, x + w, y + h]
                          for x, y, w, h in (o['bbox'] for o in objs)],
                         np.float32).reshape(-1, 4)
        objects.append((boxes, np.array([o['label'] for o in objs], np.int64)))
    return images, objects


def data_key(regime: Regime) -> str:
    """A short hash of the fields that decide the images."""
    fields = asdict(regime.shapes_spec())
    return hashlib.sha1(json.dumps(fields,
                                   sort_keys=True).encode()).hexdigest()[:10]


def data_path(regime: Regime, work_root: str) -> str:
    return osp.join(work_root, f'data_{regime.name}_{data_key(regime)}.npz')


def make_data(regime: Regime, work_root: str) -> str:
    """Renders both splits into one cache file (reused when present);
    returns its path."""
    path = data_path(regime, work_root)
    if osp.isfile(path):
        return path
    os.makedirs(work_root, exist_ok=True)
    arrays = {}
    for split in ('train', 'val'):
        images, objects = render_split(regime, split)
        arrays[f'{split}_images'] = images
        arrays[f'{split}_boxes'] = np.concatenate(
            [b for b, _ in objects]) if objects else np.zeros((0, 4))
        arrays[f'{split}_labels'] = np.concatenate([lb for _, lb in objects])
        arrays[f'{split}_counts'] = np.array([len(b) for b, _ in objects])
    tmp = path[:-len('.npz')] + '.tmp.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def load_data(path: str) -> Dict[str, Split]:
    """{'train': Split, 'val': Split} of a :func:`make_data` cache."""
    out = {}
    with np.load(path) as f:
        for split in ('train', 'val'):
            ends = np.cumsum(f[f'{split}_counts'])
            starts = ends - f[f'{split}_counts']
            boxes, labels = f[f'{split}_boxes'], f[f'{split}_labels']
            out[split] = (f[f'{split}_images'],
                          [(boxes[s:e].astype(np.float32), labels[s:e])
                           for s, e in zip(starts, ends)])
    return out


def coco_ground_truth(split: Split) -> Dict:
    """The COCO dict of a split (ids from 1), for pycocotools."""
    from projects.focal_retina.datasets.synthetic_shapes import SHAPE_CLASSES
    images, objects = split
    h, w = images.shape[1:3]
    coco = dict(
        images=[dict(id=i + 1, width=w, height=h) for i in range(len(images))],
        annotations=[],
        categories=[
            dict(id=k + 1, name=n) for k, n in enumerate(SHAPE_CLASSES)
        ])
    for i, (boxes, labels) in enumerate(objects):
        for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels.tolist()):
            coco['annotations'].append(
                dict(
                    id=len(coco['annotations']) + 1,
                    image_id=i + 1,
                    category_id=label + 1,
                    bbox=[x0, y0, x1 - x0, y1 - y0],
                    area=(x1 - x0) * (y1 - y0),
                    iscrowd=0))
    return coco


def measure_imbalance(regime: Regime, train: Split) -> Dict:
    """Anchors, positives and negatives per positive of the training
    images at the model's input (``benchmarks/imbalance.py``)."""
    from benchmarks import imbalance
    images, objects = train
    h, w = images.shape[1:3]
    return imbalance.measure_boxes(
        model_config(regime), [
            dict(height=h, width=w, boxes=b.tolist(), labels=lb.tolist())
            for b, lb in objects
        ])
