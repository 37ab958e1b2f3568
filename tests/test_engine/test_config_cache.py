"""The cached model-index lookup answers as mmengine's own does."""
import pytest
from mmengine.config import utils as cfg_utils
from mmengine.utils import get_installed_path

from projects.focal_retina.engine import config_cache


def test_cached_lookup_equals_mmengine():
    mmdet = get_installed_path('mmdet')
    assert cfg_utils._get_cfg_metainfo is config_cache._cached_cfg_metainfo
    name = 'retinanet/retinanet_r50_fpn_1x_coco.py'
    assert config_cache._cached_cfg_metainfo(mmdet, name) == \
        config_cache._original(mmdet, name)
    # a base config is not an experiment: both raise ValueError, on which
    # mmengine falls back to the plain path
    for lookup in (config_cache._cached_cfg_metainfo, config_cache._original):
        with pytest.raises(ValueError):
            lookup(mmdet, '_base_/models/retinanet_r50_fpn')
