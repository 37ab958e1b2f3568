"""The paper's experiments as one machine-checked table.

``configs/paper_settings.csv`` holds one row per shipped config: the paper
table/row it reproduces, the paper's AP and the split it was measured on,
the settings that row of the paper states, and the backbone the config
takes (the paper's MSRA caffe-style ResNet in the ``_caffe`` configs,
mmdet's torchvision ResNet in the others). :func:`resolve_settings`
reads the same settings back from a resolved config (``Config.fromfile``,
defaults of our registered components filled in), so a test can check every
config against its row, the README table can be generated from the file,
and the results collector can put measured AP beside the paper's.
"""
import csv
import inspect
import os.path as osp
from typing import Any, Dict, List, Optional

from mmengine.config import Config, ConfigDict

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
TABLE = osp.join(ROOT, 'configs', 'paper_settings.csv')

# Columns compared with the resolved config; the others describe the row.
SETTINGS = ('depth', 'backbone', 'style', 'bn', 'weights', 'channels',
            'pixel_mean', 'pixel_std', 'train_scale', 'test_scale',
            'max_size', 'loss', 'gamma', 'alpha', 'beta', 'prior', 'scales',
            'ratios', 'pos_iou', 'neg_iou', 'box_beta', 'score_thr',
            'ohem_batch', 'ohem_nms', 'ohem_pos_fraction', 'dr', 'iters',
            'lr', 'lr_steps', 'batch')
# What the backbone columns hold (the paper's own backbone is MSRA's
# caffe-style ResNet: style 'caffe', bn 'frozen', channels 'BGR', std 1;
# the configs without the _caffe suffix take mmdet's torchvision ResNets,
# see docs/paper_reproduction.md):
#   backbone    'ResNet', or 'ResNeXt <groups>x<base_width>d'
#   style       where a bottleneck strides: 'caffe' (1x1) / 'pytorch' (3x3)
#   bn          'frozen' (statistics and affine), 'affine trained'
#               (statistics frozen), 'trained', 'affine frozen'
#   weights     the backbone's init_cfg checkpoint ('' for none)
#   channels    the order the network sees ('BGR' as images are read,
#               'RGB' when the data preprocessor swaps them)
#   pixel_mean, pixel_std   the data preprocessor's, in that order
DESCRIPTION = ('config', 'table', 'row', 'paper_ap', 'split', 'note')


def load_table(path: str = TABLE) -> List[Dict[str, str]]:
    """Rows of the settings table, as strings (empty cell = not applicable).

    Raises:
        ValueError: A column is missing or unexpected, naming it and the file.
    """
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        expected = list(DESCRIPTION[:-1] + SETTINGS + DESCRIPTION[-1:])
        if columns != expected:
            raise ValueError(f'{path}: columns {columns}, expected {expected}')
        return [dict(row) for row in reader]


def _fmt(value: Any) -> str:
    """One canonical text form per value, as written in the table."""
    if value is None:
        return ''
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, (list, tuple)):
        return ';'.join(_fmt(v) for v in value)
    return str(value)


def _with_defaults(cfg: ConfigDict, registry_name: str) -> Dict[str, Any]:
    """A component's config with its ``__init__`` defaults filled in."""
    from mmdet.registry import MODELS, TASK_UTILS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cls = MODELS.get(cfg['type']) or TASK_UTILS.get(cfg['type'])
    if cls is None:
        raise KeyError(f'{registry_name}: unknown type {cfg["type"]!r}')
    params = inspect.signature(cls.__init__).parameters
    out = {
        k: p.default
        for k, p in params.items() if p.default is not inspect.Parameter.empty
    }
    out.update(cfg)
    return out


def _class_defaults(cls: type) -> Dict[str, Any]:
    """``__init__`` defaults of ``cls`` and of the classes it passes
    ``**kwargs`` on to (its MRO; a subclass's default wins)."""
    out: Dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get('__init__')
        if init is None or klass is object:
            continue
        for k, p in inspect.signature(init).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[k] = p.default
    return out


def _backbone(model: ConfigDict) -> Dict[str, str]:
    """The backbone and the input it is fed: architecture, stride style,
    batch norm, weights, channel order and pixel normalisation."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = model.backbone
    cls = MODELS.get(cfg['type'])
    if cls is None:
        raise KeyError(f'model.backbone: unknown type {cfg["type"]!r}')
    bb = {**_class_defaults(cls), **cfg}
    name = cfg['type']
    if name == 'ResNeXt':
        name = f'ResNeXt {bb["groups"]}x{bb["base_width"]}d'
    # mmcv's build_norm_layer: requires_grad defaults to True
    affine = (bb.get('norm_cfg') or {}).get('requires_grad', True)
    stats_frozen = bool(bb.get('norm_eval', False))
    bn = {(False, True): 'frozen', (True, True): 'affine trained',
          (True, False): 'trained', (False, False): 'affine frozen'}
    init = bb.get('init_cfg') or {}
    weights = init.get('checkpoint', '') if init.get(
        'type') == 'Pretrained' else ''
    pre = _with_defaults(model.data_preprocessor, 'model.data_preprocessor')
    # mmcv reads images as BGR; the preprocessor swaps to RGB if asked
    swapped = bool(pre.get('bgr_to_rgb') or pre.get('rgb_to_bgr'))
    return dict(
        backbone=name,
        style=_fmt(bb.get('style')),
        bn=bn[(bool(affine), stats_frozen)],
        weights=weights,
        channels='RGB' if swapped else 'BGR',
        pixel_mean=_fmt([float(v) for v in pre.get('mean') or []]),
        pixel_std=_fmt([float(v) for v in pre.get('std') or []]))


def _pipeline(dataloader: ConfigDict) -> List[Dict[str, Any]]:
    dataset = dataloader['dataset']
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset['dataset']  # RepeatDataset / ClassBalanced...
    return dataset['pipeline']


def _scales(pipeline: List[Dict[str, Any]]) -> Dict[str, str]:
    """Shorter side(s) and longer-side cap of the pipeline's resize step."""
    for step in pipeline:
        if step['type'] == 'Resize':
            sizes = [tuple(step['scale'])]
            break
        if step['type'] == 'RandomChoiceResize':
            sizes = [tuple(s) for s in step['scales']]
            break
    else:
        return dict(scale='', max_size='')
    shorts = sorted(min(s) for s in sizes)
    scale = str(shorts[0]) if len(shorts) == 1 else \
        f'{shorts[0]}-{shorts[-1]}'
    return dict(scale=scale, max_size=str(max(max(s) for s in sizes)))


def _loss(loss: Dict[str, Any]) -> Dict[str, str]:
    if loss['type'] == 'FocalFamilyLoss':
        star = bool(loss.get('star'))
        name = 'FL*' if star else ('CE' if loss['gamma'] == 0 else 'FL')
        return dict(
            loss=name,
            gamma=_fmt(float(loss['gamma'])),
            alpha=_fmt(loss['alpha']),
            beta=_fmt(loss.get('star_beta')) if star else '',
            dr='')
    if loss['type'] == 'DRLoss':
        keys = [k for k in ('grouping', 'margin', 'pos_lambda', 'neg_lambda',
                            'L', 'tau') if k in loss]
        dr = ';'.join(f'{k}={_fmt(loss[k])}' for k in keys)
        return dict(loss='DR', gamma='', alpha='', beta='', dr=dr)
    return dict(loss=loss['type'], gamma='', alpha='', beta='', dr='')


def _ohem(sampler: Dict[str, Any]) -> Dict[str, str]:
    if sampler.get('type') != 'OneStageOHEMSampler':
        return dict(ohem_batch='', ohem_nms='', ohem_pos_fraction='')
    return dict(
        ohem_batch=_fmt(sampler['batch_size']),
        ohem_nms=_fmt(float(sampler['nms_iou'])),
        ohem_pos_fraction=_fmt(sampler.get('pos_fraction')))


def _schedule(cfg: Config) -> Dict[str, str]:
    steps: Optional[list] = None
    iters = cfg.train_cfg.get('max_iters')
    for sched in cfg.get('param_scheduler') or []:
        if sched['type'] == 'MultiStepLR':
            steps = sched['milestones']
        elif sched['type'] == 'BudgetMultiStepLR':
            # the iterations the Runner resolves for this run's max_iters
            steps = [round(f * iters) for f in sched['milestone_fractions']]
    per_gpu = cfg.train_dataloader.batch_size
    batch = cfg.get('auto_scale_lr', {}).get('base_batch_size', per_gpu)
    return dict(
        iters=_fmt(iters),
        lr=_fmt(float(cfg.optim_wrapper.optimizer.lr)),
        lr_steps=_fmt(steps),
        batch=_fmt(batch))


def resolve_settings(cfg: Config) -> Dict[str, str]:
    """The table's settings columns, read from a resolved config.

    Args:
        cfg: ``Config.fromfile(path)`` of a shipped config.

    Returns:
        {column: text} for every column of :data:`SETTINGS`.
    """
    model = cfg.model
    head = _with_defaults(model.bbox_head, 'model.bbox_head')
    loss = _with_defaults(head['loss_cls'], 'model.bbox_head.loss_cls')
    anchors = head['anchor_generator']
    assigner = model.train_cfg.assigner
    train = _scales(_pipeline(cfg.train_dataloader))
    test = _scales(_pipeline(cfg.test_dataloader))
    out = dict(
        depth=_fmt(model.backbone.depth),
        train_scale=train['scale'],
        test_scale=test['scale'],
        max_size=test['max_size'],
        prior=_fmt(head.get('prior_prob')),
        scales=_fmt(anchors['scales_per_octave']),
        ratios=_fmt([float(r) for r in anchors['ratios']]),
        pos_iou=_fmt(float(assigner.pos_iou_thr)),
        neg_iou=_fmt(float(assigner.neg_iou_thr)),
        box_beta=_fmt(float(head['loss_bbox'].get('beta', 0.0))),
        score_thr=_fmt(float(model.test_cfg.score_thr)))
    out.update(_backbone(model))
    out.update(_loss(loss))
    out.update(_ohem(model.train_cfg.get('sampler') or {}))
    out.update(_schedule(cfg))
    return {k: out[k] for k in SETTINGS}
