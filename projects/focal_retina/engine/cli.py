"""Helpers shared by the command-line tools in ``tools/``.

They turn user mistakes (a missing config or checkpoint, a bad
``--cfg-options`` key) into one-line errors that name the culprit, map
``--amp`` to the right mixed-precision wrapper for the device, and convert a
schedule to another total batch (``--scale-schedule``).
"""
import os
import os.path as osp
import shlex
import warnings
from typing import Callable, Optional, Sequence

from mmengine.config import Config

# The one-line errors are shared with the torch-free runtime (an .onnx file
# runs without mmengine); re-exported here for the tools.
from projects.focal_retina_runtime.cli import check_checkpoint  # noqa: F401
from projects.focal_retina_runtime.cli import check_file  # noqa: F401
from projects.focal_retina_runtime.cli import fail


def read_config(path: str) -> Config:
    """``Config.fromfile`` without setuptools' ``pkg_resources is
    deprecated`` warning, printed three times per ``mmdet::`` config by
    mmengine's package lookup (only that warning, only here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            'ignore',
            message='pkg_resources is deprecated',
            category=UserWarning)
        return Config.fromfile(path)


def load_config(path: str,
                cfg_options: Optional[dict] = None,
                on_read: Optional[Callable[[Config], None]] = None) -> Config:
    """Loads a config file and applies ``--cfg-options`` overrides;
    ``on_read(cfg)`` sees the file's own values first (what tools/train.py
    compares a run's schedule against)."""
    if not osp.isfile(path):
        fail(f'config file {path!r} does not exist')
    try:
        cfg = read_config(path)
    except Exception as exc:  # syntax errors, missing _base_ files, ...
        fail(f'cannot load config {path!r}: {type(exc).__name__}: {exc}')
    if on_read is not None:
        on_read(cfg)
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as exc:
            fail(f'bad --cfg-options {cfg_options}: {exc}')
    if 'model' in cfg:
        from mmdet.registry import MODELS, TASK_UTILS

        from projects.focal_retina.utils.arguments import check_config_types
        try:
            check_config_types(cfg.model, [MODELS, TASK_UTILS])
            check_classes(cfg)
        except (KeyError, ValueError) as exc:
            fail(f'config {path!r}: {exc.args[0]}')
    return cfg


def check_class_names(classes, key: str) -> None:
    """ValueError unless ``classes`` is a non-empty sequence of distinct
    names. The classic mistake is ``classes = ('tree')``: the string
    'tree', which mmdet reads as the 4 classes t, r, e, e."""
    if isinstance(classes, str):
        raise ValueError(
            f'{key} is the string {classes!r}, not a tuple of names '
            f"(Python reads ({classes!r}) as {classes!r}): write "
            f'classes = ({classes!r}, )')
    names = list(classes)
    if not names:
        raise ValueError(f'{key} is empty: expected at least one class name')
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f'{key} names {", ".join(map(repr, twice))} more '
                         'than once: each class needs one name')


def check_classes(cfg: Config) -> None:
    """The class names of every dataloader's dataset are valid
    (:func:`check_class_names`), the same for every split, and as many as
    ``model.bbox_head.num_classes``; ValueError naming the keys otherwise.
    """
    found = []
    for split in ('train', 'val', 'test'):
        dataset = _dataset_of(cfg.get(f'{split}_dataloader'))
        classes = ((dataset or {}).get('metainfo') or {}).get('classes')
        if classes is None:
            continue
        key = f'{split}_dataloader.dataset.metainfo.classes'
        check_class_names(classes, key)
        found.append((key, tuple(classes)))
    for key, classes in found[1:]:
        if classes != found[0][1]:
            raise ValueError(f'{key}={classes} differs from '
                             f'{found[0][0]}={found[0][1]}')
    head = cfg.model.get('bbox_head')
    num = head.get('num_classes') if isinstance(head, dict) else None
    if found and isinstance(num, int) and num != len(found[0][1]):
        key, classes = found[0]
        raise ValueError(
            f'model.bbox_head.num_classes={num} but {key} has '
            f'{len(classes)} name(s) {classes}: set model = dict(bbox_head='
            'dict(num_classes=len(classes)))')


def set_work_dir(cfg: Config, work_dir: Optional[str],
                 config_path: str) -> None:
    """``--work-dir``, else the config's, else work_dirs/<config name>."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def add_safety_hooks(
    cfg: Config,
    names: Sequence[str] = ('NonFiniteGuardHook',
                            'CheckpointCompatibilityHook')
) -> None:
    """Adds the NaN guard and the checkpoint-fit check (or the hooks
    ``names``) to ``cfg``'s ``custom_hooks`` unless the config configures
    them itself (a config's ``custom_hooks`` list replaces its base's, so
    they are added here rather than in a base config)."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    types = {h.get('type') for h in hooks if isinstance(h, dict)}
    for name in names:
        if name not in types:
            hooks.append(dict(type=name))
    cfg.custom_hooks = hooks


def _dataset_of(loader_cfg) -> Optional[dict]:
    """The innermost dataset config of a dataloader (through wrappers such
    as RepeatDataset / ClassBalancedDataset)."""
    dataset = loader_cfg.get('dataset') if loader_cfg else None
    while isinstance(dataset, dict) and isinstance(
            dataset.get('dataset'), dict):
        dataset = dataset['dataset']
    return dataset if isinstance(dataset, dict) else None


def check_dataset_paths(cfg: Config, splits) -> None:
    """Fails with one line naming the missing annotation file or image
    folder and the config key to fix (mmdet would raise
    ``FileNotFoundError(2, 'No such file or directory')`` without the path,
    from inside a dataloader worker).

    Args:
        cfg: The resolved config.
        splits: Dataloader prefixes to check, e.g. ``('train', 'val')``.
    """
    for split in splits:
        key = f'{split}_dataloader.dataset'
        dataset = _dataset_of(cfg.get(f'{split}_dataloader'))
        if dataset is None:
            continue
        root = dataset.get('data_root') or ''
        ann = dataset.get('ann_file')
        if ann and '://' not in ann:
            path = osp.join(root, ann)
            if not osp.isfile(path):
                fail(f'{key}.ann_file: annotation file {path!r} does not '
                     f'exist (data_root={root!r}, ann_file={ann!r})')
        img = (dataset.get('data_prefix') or {}).get('img')
        if img is not None and '://' not in img:
            path = osp.join(root, img)
            if not osp.isdir(path):
                fail(f'{key}.data_prefix.img: image folder {path!r} does not '
                     f'exist (data_root={root!r}, data_prefix.img={img!r})')
        evaluator = cfg.get(f'{split}_evaluator')
        for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
            ev_ann = ev.get('ann_file') if isinstance(ev, dict) else None
            if ev_ann and '://' not in ev_ann and not osp.isfile(ev_ann):
                fail(f'{split}_evaluator.ann_file: annotation file '
                     f'{ev_ann!r} does not exist')


# The first line tools/make_config.py writes into a config.
MAKE_CONFIG_MARK = 'written by tools/make_config.py'


def from_scratch_command(config_path: str, cfg: Config) -> Optional[str]:
    """The ``tools/make_config.py`` command that writes ``config_path``
    again with ``--start scratch``, for a config that tool wrote (its first
    line says so); None for any other config.

    Offline, a ``--start coco`` config stops at the COCO weights: this is
    the alternative that needs none, with the same name, files and steps.
    The paths come from the config itself (data_root joined to each file),
    so they are the ones the user gave, as the config resolved them.
    """
    try:
        with open(config_path, encoding='utf-8') as f:
            first = f.readline()
    except OSError:
        return None
    if MAKE_CONFIG_MARK not in first:
        return None
    train = cfg.train_dataloader.dataset
    val = cfg.val_dataloader.dataset
    argv = [
        'python', 'tools/make_config.py',
        osp.splitext(osp.basename(config_path))[0], '--train',
        osp.join(train.get('data_root') or '', train.ann_file), '--val',
        osp.join(val.get('data_root') or '', val.ann_file), '--img-root',
        osp.join(train.get('data_root') or '',
                 train.data_prefix.img).rstrip('/')
    ]
    out_dir = osp.dirname(config_path)
    if osp.normpath(out_dir or '.') != 'my_configs':
        argv += ['--out-dir', out_dir or '.']
    return shlex.join(argv + ['--start', 'scratch', '--force'])


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (no path) continues from: the one
    ``last_checkpoint`` names if that file exists, else the highest
    complete ``iter_N.pth`` / ``epoch_N.pth`` of the work dir (a
    ``last_checkpoint`` left empty or stale by a kill), else None."""
    import glob
    import re
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    found = []
    for path in glob.glob(osp.join(work_dir, '*_*.pth')):
        m = re.fullmatch(r'(iter|epoch)_(\d+)\.pth', osp.basename(path))
        if m:
            found.append((int(m.group(2)), path))
    return max(found)[1] if found else None


def enable_amp(cfg: Config, device: str) -> None:
    """Switches the optimizer wrapper of ``cfg`` to mixed precision.

    Args:
        cfg: The config (modified in place).
        device: The device type the model trains on, e.g. 'cpu' or 'cuda'
            (the tools pass ``mmengine.device.get_device()``, the device
            mmengine's Runner moves the model to).

    'cpu': our CPUBF16OptimWrapper (bfloat16 autocast), because
    AmpOptimWrapper asserts a GPU; any other device: mmengine's
    AmpOptimWrapper (float16 with dynamic loss scaling).
    """
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in ('AmpOptimWrapper', 'CPUBF16OptimWrapper'):
        return
    if wrapper != 'OptimWrapper':
        fail(f'--amp cannot wrap optim_wrapper.type={wrapper!r}; '
             "expected 'OptimWrapper'")
    if device == 'cpu':
        cfg.optim_wrapper.type = 'CPUBF16OptimWrapper'
    else:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


# --- the schedule at another total batch (--scale-schedule) ----------------

# Schedulers whose only iteration-valued arguments are begin/end and these:
# their milestones can be rescaled. BudgetLinearLR / BudgetMultiStepLR hold
# fractions of train_cfg.max_iters, which rescale with it by themselves.
_SCALABLE_KEYS = ('begin', 'end', 'milestones', 'T_max', 'step_size')
_SCALABLE_SCHEDULERS = {
    f'{family}{kind}'
    for family in ('Constant', 'Linear', 'MultiStep', 'Step',
                   'CosineAnnealing', 'Poly')
    for kind in ('LR', 'Momentum', 'ParamScheduler')
} | {'BudgetLinearLR', 'BudgetMultiStepLR'}
_WORLD_SIZE_ENV = {
    'pytorch': 'WORLD_SIZE',
    'slurm': 'SLURM_NTASKS',
    'mpi': 'OMPI_COMM_WORLD_SIZE'
}
_INF = 10**9  # mmengine's INF: an ``end`` meaning "the end of the run"


def launch_world_size(launcher: str) -> int:
    """The number of training processes of this launch: the process group's
    size when it exists already (the CPU gloo group), 1 for
    ``--launcher none``, else what the launcher put into the environment
    (the Runner reads the same variables when it creates the group)."""
    from mmengine.dist import get_world_size, is_distributed
    if is_distributed():
        return get_world_size()
    if launcher == 'none':
        return 1
    name = _WORLD_SIZE_ENV[launcher]
    value = os.environ.get(name, '')
    if not value.isdigit() or int(value) < 1:
        fail(f'--launcher {launcher}: ${name} is {value!r}; expected the '
             'number of processes (start the tool with its launcher)')
    return int(value)


def _loop_kind(cfg: Config) -> str:
    train_cfg = cfg.get('train_cfg') or {}
    if 'max_iters' in train_cfg:
        return 'iters'
    if 'max_epochs' in train_cfg:
        return 'epochs'
    raise ValueError('train_cfg has neither max_iters nor max_epochs')


def schedule_reference(cfg: Config, source: str) -> Optional[dict]:
    """What a config file trains, before any option changes it: the batch
    its lr is written for (``auto_scale_lr.base_batch_size``, else the
    file's ``train_dataloader.batch_size``) and its length.

    Returns:
        ``dict(batch, batch_key, kind, length, source)`` (kind 'iters' or
        'epochs'), or None when the file states no length.
    """
    try:
        kind = _loop_kind(cfg)
    except ValueError:
        return None
    base = (cfg.get('auto_scale_lr') or {}).get('base_batch_size')
    key = 'auto_scale_lr.base_batch_size'
    if base is None:
        base = (cfg.get('train_dataloader') or {}).get('batch_size')
        key = 'train_dataloader.batch_size'
    return dict(
        batch=base,
        batch_key=key,
        kind=kind,
        length=cfg.train_cfg[f'max_{kind}'],
        source=source)


def _fraction_text(part: int, whole: int) -> str:
    """``'0.125 (1/8)'``: the ratio, and as a fraction where that is short."""
    from fractions import Fraction
    exact = Fraction(part, whole)
    text = f'{part / whole:.4g}'
    if 1 < exact.denominator <= 10000:
        text += f' ({exact})'
    return text


def images_line(cfg: Config,
                world_size: int,
                reference: Optional[dict],
                dataset_size: Optional[int] = None) -> str:
    """The one line every training run prints first: how many images it
    will see, against what its config file trains.

    Args:
        cfg: The config of the run (options applied).
        world_size: Training processes.
        reference: :func:`schedule_reference` of the config file.
        dataset_size: Images of the training dataset (epoch-based loops).

    Returns:
        E.g. ``images: 2 per iteration (1 process x 2) x 90,000 iterations
        = 180,000; 0.125 (1/8) of the config's 16 x 90,000 = 1,440,000
        (auto_scale_lr.base_batch_size x max_iters of ...); --scale-schedule
        ...``.
    """
    kind = _loop_kind(cfg)
    per_process = cfg.train_dataloader.batch_size
    batch = world_size * per_process
    length = cfg.train_cfg[f'max_{kind}']
    plural = '' if world_size == 1 else 'es'
    if kind == 'iters':
        images = batch * length
        text = (f'images: {batch} per iteration ({world_size} process'
                f'{plural} x {per_process}) x {length:,} iteration'
                f'{"" if length == 1 else "s"} = {images:,}')
    else:
        text = (f'images: {length} epochs x {dataset_size:,} training images'
                f' = {length * dataset_size:,} (the same at any batch; '
                f'{batch} per iteration)')
    if reference is None or reference['kind'] != kind or \
            reference['batch'] is None:
        return text + '; the config states no reference schedule'
    ref_len = reference['length']
    if kind == 'iters':
        ref_images = reference['batch'] * ref_len
        fraction = images / ref_images
        text += (f'; {_fraction_text(images, ref_images)} of the '
                 f'{reference["batch"]} x {ref_len:,} = {ref_images:,} of '
                 f'{reference["source"]} ({reference["batch_key"]} x '
                 'train_cfg.max_iters)')
    else:
        fraction = length / ref_len
        text += (f'; {_fraction_text(length, ref_len)} of the {ref_len} '
                 f'epochs of {reference["source"]}')
    if (fraction < 1 and kind == 'iters' and batch < reference['batch']
            and reference['batch_key'] == 'auto_scale_lr.base_batch_size'):
        text += ('; --scale-schedule trains its images at this batch '
                 '(more iterations, lr scaled down)')
    return text


def _scale(value: int, ratio: float) -> int:
    return max(1, round(value * ratio))


def scale_schedule(cfg: Config, total_batch: int) -> str:
    """Rescales ``cfg`` (in place) from ``auto_scale_lr.base_batch_size`` to
    a total batch of ``total_batch`` images, as detectron2's
    ``DefaultTrainer.auto_scale_workers`` does for its
    ``REFERENCE_WORLD_SIZE``: lr x B / base, and everything counted in
    iterations x base / B, so that the run sees the config's images with
    the config's lr per image.

    Iteration loops: max_iters, val_interval and an iteration-counted
    checkpoint interval; fraction schedulers (BudgetLinearLR,
    BudgetMultiStepLR) follow max_iters, the milestones / begin / end of
    mmengine's step, linear, constant, cosine and poly schedulers counted
    in iterations are rescaled. Epoch loops already see the dataset once
    per epoch at any batch: epochs stay, only the lr and iteration-counted
    schedulers (a warm-up) change. ``auto_scale_lr.enable`` is turned off:
    the lr is scaled here, in the config the work dir keeps.

    Args:
        cfg: The config (modified in place).
        total_batch: World size x ``train_dataloader.batch_size``.

    Returns:
        One line naming every changed value.

    Raises:
        ValueError: No ``auto_scale_lr.base_batch_size``, no optimizer lr,
            or a scheduler counted in iterations that cannot be rescaled
            (e.g. ExponentialLR, whose gamma is per iteration).
    """
    base = (cfg.get('auto_scale_lr') or {}).get('base_batch_size')
    if not isinstance(base, int) or base < 1:
        raise ValueError('the config has no auto_scale_lr.base_batch_size '
                         '(the total batch its lr and schedule are for)')
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    if 'lr' not in optimizer:
        raise ValueError('the config has no optim_wrapper.optimizer.lr')
    kind = _loop_kind(cfg)
    to_batch = total_batch / base  # lr
    to_iters = base / total_batch  # everything counted in iterations
    schedulers = cfg.get('param_scheduler') or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else schedulers
    by_iter = [(i, s) for i, s in enumerate(schedulers)
               if not s.get('by_epoch', True)]  # epochs: the same at any B
    for i, sched in by_iter:  # all checked before anything changes
        name = getattr(sched.get('type'), '__name__', sched.get('type'))
        if name not in _SCALABLE_SCHEDULERS:
            raise ValueError(
                f'param_scheduler[{i}] ({name}, by_epoch=False) counts '
                'iterations in a way that cannot be rescaled; write it with '
                'BudgetLinearLR / BudgetMultiStepLR (fractions of the run) '
                'or scale it yourself with --cfg-options')
    scaled = []
    for i, sched in by_iter:
        for key in _SCALABLE_KEYS:
            value = sched.get(key)
            if value is None or (key == 'end' and value >= _INF):
                continue
            if key == 'milestones':
                sched[key] = [_scale(m, to_iters) for m in value]
            elif key == 'begin':
                sched[key] = round(value * to_iters)
            else:
                sched[key] = _scale(value, to_iters)
            scaled.append(f'param_scheduler[{i}].{key} {value} -> '
                          f'{sched[key]}')
    changes = [f'lr {optimizer.lr:g} -> {optimizer.lr * to_batch:g}']
    optimizer.lr = optimizer.lr * to_batch
    if kind == 'iters':
        changes += _scale_key(cfg.train_cfg, 'max_iters', 'max_iters',
                              to_iters)
        changes += _scale_key(cfg.train_cfg, 'val_interval', 'val_interval',
                              to_iters)
        dynamic = cfg.train_cfg.get('dynamic_intervals')
        if dynamic:
            cfg.train_cfg.dynamic_intervals = [
                (_scale(m, to_iters), _scale(v, to_iters)) for m, v in dynamic
            ]
            changes.append('dynamic_intervals')
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint')
    if ckpt and ckpt.get('by_epoch', True) is False:
        changes += _scale_key(ckpt, 'interval', 'checkpoint interval',
                              to_iters)
    cfg.auto_scale_lr.enable = False  # scaled here, not again by mmengine
    if kind == 'iters':
        changes += _fraction_points(schedulers, cfg.train_cfg.max_iters)
    steps = ('' if kind == 'iters' else
             f'; {cfg.train_cfg.max_epochs} epochs stay (an epoch is the '
             'dataset at any batch)')
    return (f'--scale-schedule: total batch {total_batch} instead of '
            f'{base}: ' + ', '.join(changes + scaled) + steps)


def _fraction_points(schedulers: list, max_iters: int) -> list:
    """Where the fraction schedulers will put their warm-up end and steps
    in a run of ``max_iters`` (for the user; the schedulers resolve them
    themselves when the Runner builds them)."""
    points = []
    for sched in schedulers:
        name = getattr(sched.get('type'), '__name__', sched.get('type'))
        begin = sched.get('begin', 0)
        end = sched.get('end', max_iters)
        length = (max_iters if end is None or end >= _INF else end) - begin
        if name == 'BudgetLinearLR':
            warmup = max(1, round(sched.warmup_fraction * length))
            points.append(f'warm-up {warmup} iterations')
        elif name == 'BudgetMultiStepLR':
            steps = [
                begin + round(f * length) for f in sched.milestone_fractions
            ]
            points.append('lr steps at ' + ', '.join(map(str, steps)))
    return points


def _scale_key(section, key: str, name: str, ratio: float) -> list:
    value = section.get(key)
    if not isinstance(value, int):
        return []
    section[key] = _scale(value, ratio)
    return [f'{name} {value} -> {section[key]}']
