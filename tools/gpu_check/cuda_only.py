"""pytest plugin: run only the suite's CUDA-only tests.

``python -m pytest -p cuda_only FILES`` (with ``tools/gpu_check`` on
``PYTHONPATH``) keeps the tests that carry a ``skipif`` mark whose reason
names CUDA -- the suite marks its CUDA-only tests so
(``needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
reason='needs a CUDA device')``) -- and deselects the rest. Selecting by the
mark's reason rather than by a list of names picks up CUDA tests added
later; on a machine without CUDA the selected tests are all skipped.
"""
from typing import List

import pytest


def needs_cuda(item: pytest.Item) -> bool:
    """Whether ``item`` is skipped without a CUDA device."""
    for mark in item.iter_markers('skipif'):
        reason = str(mark.kwargs.get('reason', ''))
        if 'cuda' in reason.lower():
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config,
                                  items: List[pytest.Item]) -> None:
    keep = [item for item in items if needs_cuda(item)]
    drop = [item for item in items if not needs_cuda(item)]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
