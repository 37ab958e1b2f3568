"""Reads an installed package's model index once per process.

Our configs inherit mmdet's own bases (``mmdet::_base_/...``). For every
such reference mmengine 0.10.7 (``Config._get_cfg_path``) first looks the
name up among the package's experiments by parsing *all* of its metafiles
(``.mim/model-index.yml`` and ~300 YAML files for mmdet, about 1 s), then,
as a base config is never listed there, falls back to the plain path. A
config of ours names three such bases, so parsing one cost ~3 s and the
test suite, which resolves every config, minutes. The index is a pure
function of the installed package, so it is cached here; the lookup and
its errors are mmengine's.
"""
import functools
from typing import Dict

from mmengine.config import utils as cfg_utils

_original = cfg_utils._get_cfg_metainfo


@functools.lru_cache(maxsize=None)
def _model_index(package_path: str) -> Dict[str, dict]:
    """{experiment name: metainfo} of an installed package, as mmengine
    builds it (first weights of each config win)."""
    index: Dict[str, dict] = {}
    meta_index = cfg_utils.load(
        cfg_utils.osp.join(package_path, '.mim', 'model-index.yml'))
    for meta_path in meta_index['Import']:
        meta = cfg_utils.load(
            cfg_utils.osp.join(package_path, '.mim', meta_path))
        for model_cfg in meta['Models']:
            if 'Config' in model_cfg:
                name = model_cfg['Config'].partition('/')[-1]
                index.setdefault(name, model_cfg)
    return index


def _cached_cfg_metainfo(package_path: str, cfg_path: str) -> dict:
    index = _model_index(package_path)
    if cfg_path not in index:
        # the same error type mmengine raises, on which it falls back
        raise ValueError(f'{cfg_path} is not an experiment of {package_path}')
    return index[cfg_path]


if cfg_utils._get_cfg_metainfo is _original:
    cfg_utils._get_cfg_metainfo = _cached_cfg_metainfo
