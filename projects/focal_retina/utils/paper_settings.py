"""The paper's experiments as one machine-checked table.

``configs/paper_settings.csv`` holds one row per shipped config: the paper
table/row it reproduces, the paper's AP and the split it was measured on,
and the settings that row of the paper states. :func:`resolve_settings`
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
SETTINGS = ('depth', 'train_scale', 'test_scale', 'max_size', 'loss',
            'gamma', 'alpha', 'beta', 'prior', 'scales', 'ratios',
            'pos_iou', 'neg_iou', 'box_beta', 'score_thr', 'ohem_batch',
            'ohem_nms', 'ohem_pos_fraction', 'dr', 'iters', 'lr', 'lr_steps',
            'batch')
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
    out.update(_loss(loss))
    out.update(_ohem(model.train_cfg.get('sampler') or {}))
    out.update(_schedule(cfg))
    return {k: out[k] for k in SETTINGS}
