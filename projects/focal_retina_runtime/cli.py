"""One-line errors for the command-line tools, without mmengine.

The same messages as ``projects.focal_retina.engine.cli`` (which imports
mmengine's ``Config`` at import time), for the part of ``tools/infer.py``
that runs an ``.onnx`` file with numpy, opencv and onnxruntime alone.
"""
import os.path as osp
import sys
from typing import NoReturn, Optional


def fail(msg: str) -> NoReturn:
    """Prints ``<tool>: error: msg`` and exits with status 2."""
    print(f'{osp.basename(sys.argv[0])}: error: {msg}', file=sys.stderr)
    sys.exit(2)


def check_file(path: Optional[str], what: str) -> None:
    """Fails with a clear message unless ``path`` is an existing file."""
    if path is not None and not osp.isfile(path):
        fail(f'{what} {path!r} does not exist')


def check_checkpoint(path: Optional[str], what: str = 'checkpoint') -> None:
    """:func:`check_file` for a local file; a remote name (``https://``,
    ``torchvision://``...) is left to the loader."""
    if path is not None and '://' not in path:
        check_file(path, what)
