"""Helpers shared by the command-line tools in ``tools/``.

They turn user mistakes (a missing config or checkpoint, a bad
``--cfg-options`` key) into one-line errors that name the culprit, and map
``--amp`` to the right mixed-precision wrapper for the device.
"""
import os.path as osp
import sys
import warnings
from typing import NoReturn, Optional, Sequence

from mmengine.config import Config


def fail(msg: str) -> NoReturn:
    """Prints ``<tool>: error: msg`` and exits with status 2."""
    print(f'{osp.basename(sys.argv[0])}: error: {msg}', file=sys.stderr)
    sys.exit(2)


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


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Loads a config file and applies ``--cfg-options`` overrides."""
    if not osp.isfile(path):
        fail(f'config file {path!r} does not exist')
    try:
        cfg = read_config(path)
    except Exception as exc:  # syntax errors, missing _base_ files, ...
        fail(f'cannot load config {path!r}: {type(exc).__name__}: {exc}')
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


def check_file(path: Optional[str], what: str) -> None:
    """Fails with a clear message unless ``path`` is an existing file."""
    if path is not None and not osp.isfile(path):
        fail(f'{what} {path!r} does not exist')


def check_checkpoint(path: Optional[str], what: str = 'checkpoint') -> None:
    """:func:`check_file` for a local checkpoint; a remote name (``https://``,
    ``torchvision://``...) is fetched by the loader, which names the cache
    path to fill by hand when it cannot be downloaded."""
    if path is not None and '://' not in path:
        check_file(path, what)


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
