"""Helpers shared by the command-line tools in ``tools/``.

They turn user mistakes (a missing config or checkpoint, a bad
``--cfg-options`` key) into one-line errors that name the culprit, and map
``--amp`` to the right mixed-precision wrapper for the device.
"""
import os.path as osp
import sys
from typing import NoReturn, Optional

from mmengine.config import Config


def fail(msg: str) -> NoReturn:
    """Prints ``<tool>: error: msg`` and exits with status 2."""
    print(f'{osp.basename(sys.argv[0])}: error: {msg}', file=sys.stderr)
    sys.exit(2)


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Loads a config file and applies ``--cfg-options`` overrides."""
    if not osp.isfile(path):
        fail(f'config file {path!r} does not exist')
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # syntax errors, missing _base_ files, ...
        fail(f'cannot load config {path!r}: {type(exc).__name__}: {exc}')
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as exc:
            fail(f'bad --cfg-options {cfg_options}: {exc}')
    return cfg


def set_work_dir(cfg: Config, work_dir: Optional[str],
                 config_path: str) -> None:
    """``--work-dir``, else the config's, else work_dirs/<config name>."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def check_file(path: Optional[str], what: str) -> None:
    """Fails with a clear message unless ``path`` is an existing file."""
    if path is not None and not osp.isfile(path):
        fail(f'{what} {path!r} does not exist')


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
