"""Loading an ``mmdet::`` config through the tools prints none of
setuptools' ``pkg_resources is deprecated`` warnings (three per run before
any output of ours), and no other warning is hidden."""
import os.path as osp
import warnings

from mmengine.config import Config

from projects.focal_retina.engine.cli import read_config
from tests.conftest import ROOT

CONFIG = osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py')


def _messages(load) -> list:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        load(CONFIG)
    return [str(w.message) for w in seen]


def test_mmdet_config_without_the_pkg_resources_warning():
    # mmengine's own loader warns (the check bites)...
    assert any('pkg_resources is deprecated' in m
               for m in _messages(Config.fromfile))
    # ...ours does not, and leaves the process's filters as they were.
    before = list(warnings.filters)
    assert not any('pkg_resources' in m for m in _messages(read_config))
    assert warnings.filters == before


def test_other_warnings_still_show(monkeypatch):

    def noisy(path):
        warnings.warn('pkg_resources is deprecated as an API.', UserWarning)
        warnings.warn('another warning', UserWarning)
        return Config()

    monkeypatch.setattr(Config, 'fromfile', staticmethod(noisy))
    assert _messages(read_config) == ['another warning']
