"""Shared fixtures: the repository root, a tiny generated shapes dataset and
the real VOC photos of ../shared/data/voc100."""
import os
import os.path as osp
import socket
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import projects.focal_retina  # noqa: F401  (registers components)
from projects.focal_retina.datasets import ShapesSpec, generate_shapes_dataset

VOC100 = osp.join(osp.dirname(ROOT), 'shared', 'data', 'voc100')
TINY_SHAPES = ShapesSpec(
    seed=3,
    num_train=8,
    num_val=4,
    img_size=96,
    min_objects=2,
    max_objects=4,
    min_size=10,
    max_size=30,
    clutter=3)


def free_port() -> int:
    """A free TCP port on localhost for a torchrun rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(params=[False, True], ids=['no-cuda', 'cuda-visible'])
def cuda_visible(request, monkeypatch) -> bool:
    """Runs a CPU test twice: as on a machine without and with a GPU
    (``torch.cuda.is_available`` answers accordingly), so that a CPU test
    cannot depend on which machine runs the suite."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: request.param)
    return request.param


@pytest.fixture(scope='session')
def repo_root() -> str:
    return ROOT


@pytest.fixture(scope='session')
def tiny_shapes(tmp_path_factory) -> str:
    """A tiny shapes dataset (8 train / 4 val images of 96 px)."""
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    generate_shapes_dataset(root, TINY_SHAPES)
    return root


@pytest.fixture(scope='session')
def voc100() -> str:
    """The real photos; absent folder: skip locally, fail in CI."""
    if not osp.isfile(osp.join(VOC100, 'annotations.json')):
        msg = f'real photos not found at {VOC100}'
        if os.environ.get('FOCAL_RETINA_REQUIRE_VOC100') == '1':
            pytest.fail(msg + ' (FOCAL_RETINA_REQUIRE_VOC100=1)')
        pytest.skip(msg)
    return VOC100


@pytest.fixture(autouse=True)
def isolated_default_scope():
    """Each test starts and ends with the registry scope it found.

    mmengine's ``Runner`` creates a ``DefaultScope`` (``'mmengine'`` unless
    the config says otherwise) that stays current for the whole process;
    after a test builds such a Runner, ``MODELS.build`` in a later test
    looks in mmengine's root registry and cannot find our components, so
    the outcome would depend on test order.
    """
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)
