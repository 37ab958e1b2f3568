"""Safe loading of mmengine checkpoints on torch >= 2.6.

torch 2.6 made ``torch.load`` default to ``weights_only=True``; mmengine
0.10.7 checkpoints hold more than tensors (the message hub's history
buffers, numpy scalars and arrays), so ``load_from`` and ``--resume`` fail
with an UnpicklingError. ``weights_only=False`` would trust arbitrary
pickles, and a home-made restricted ``pickle.Unpickler`` handed to
``torch.load`` as ``pickle_module`` only guards torch's zip format: a legacy
or plain-pickle file is read by ``pickle_module.load`` before torch checks
its magic number, a TorchScript archive is handed to ``torch.jit.load``, and
the stock BUILD opcode can set attributes of an allowed *class*.

So every load here is torch's own weights-only unpickler
(``weights_only=True``), which covers the legacy, zip and TorchScript paths
alike and only builds instances of allow-listed types. The few extra types
mmengine checkpoints contain are registered for the duration of one load
with ``torch.serialization.safe_globals``:

* numpy arrays, scalars and dtypes (torch allows ``_reconstruct`` and
  ``ndarray`` but not numpy's scalar helpers and ``_codecs.encode``);
* ``HistoryBuffer``, *remapped* to :class:`_CheckedHistoryBuffer`, whose
  ``__setstate__`` validates the state and refuses custom
  ``statistics_methods`` (mmengine's own ``__setstate__`` merges them into
  a dict shared by the class, i.e. a file could change the process);
* ``builtins.getattr``, *remapped* to :func:`_history_buffer_method`, which
  answers only ``getattr(HistoryBuffer, 'min' | 'max' | 'mean' |
  'current')`` (what the buffers pickle). Allow-listing the real
  ``getattr`` would let a file reach any callable.

Anything else is refused with :class:`UntrustedCheckpointError`, which
names the file, what it referenced and how to load a trusted file anyway.
Importing this module registers :func:`safe_load` with mmengine's
``CheckpointLoader`` for local paths and every remote scheme mmengine knows
(http/https, torchvision/modelzoo, open-mmlab, mmcls, s3/petrel, pavi),
so the Runner, ``load_from``, ``--resume`` and DetInferencer all go through
it; remote files are downloaded as mmengine does, then loaded the same way.

Offline, a remote checkpoint that is not in the cache and cannot be
downloaded raises :class:`CheckpointUnavailableError`, whose one-line
message names the URL, the exact file torch and mmengine look for first
(``<torch.hub.get_dir()>/checkpoints/<file name of the URL>``, where a
copy fetched elsewhere can be put by hand), the local-path alternative and
how to train without the weights. ``torchvision://`` names resolve without
torchvision installed (mmengine's own table of torchvision's URLs).
"""
import http.client
import importlib
import io
import os
import os.path as osp
import pickle
from contextlib import contextmanager
from tempfile import TemporaryDirectory
from typing import (IO, Any, Callable, Dict, Iterable, Iterator, List,
                    Optional, Tuple, Union)
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import checkpoint as mm_ckpt
from mmengine.runner.checkpoint import CheckpointLoader

TRUST_ENV = 'FOCAL_RETINA_TRUST_CHECKPOINTS'
_HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'
_STATISTICS = ('min', 'max', 'mean', 'current')
_BUFFER_KEYS = {'max_length', '_log_history', '_count_history'}

# Types a user registered for their own checkpoints (trusted code).
_USER_GLOBALS: List[Any] = []


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds something other than weights and training state."""


class CheckpointUnavailableError(OSError):
    """A remote checkpoint is not cached and cannot be downloaded."""


def _refuse(what: str) -> UntrustedCheckpointError:
    return UntrustedCheckpointError(
        f'{what}. Only tensors, numbers, strings, containers, numpy arrays '
        'and the history buffers of mmengine checkpoints are loaded. If you '
        f'trust this file, load it with {TRUST_ENV}=1 in the environment, '
        'or register the type with projects.focal_retina.engine.checkpoint.'
        'allow_checkpoint_globals([(module, name)])')


class _CheckedHistoryBuffer(HistoryBuffer):
    """Stands in for ``HistoryBuffer`` while a checkpoint is unpickled.

    Its ``__setstate__`` accepts only the buffer's own state, then turns the
    instance into a plain ``HistoryBuffer`` (same layout, no ``__slots__``),
    so nothing of this class survives the load.
    """

    def __setstate__(self, state: Any) -> None:
        keys = sorted(state) if isinstance(state, dict) else None
        if keys is None or not _BUFFER_KEYS <= set(keys) or \
                not set(keys) <= _BUFFER_KEYS | {'statistics_methods'}:
            raise _refuse('a HistoryBuffer with unexpected state '
                          f'{keys or type(state).__name__}')
        methods = state.get('statistics_methods') or {}
        if not isinstance(methods, dict):
            raise _refuse('a HistoryBuffer whose statistics_methods is a '
                          f'{type(methods).__name__}')
        # mmengine's __setstate__ would merge these into the class's dict.
        custom = sorted(
            str(name) for name, fn in methods.items()
            if name not in _STATISTICS or fn is not getattr(HistoryBuffer,
                                                            name))
        if custom:
            raise _refuse('a HistoryBuffer that would register the statistics '
                          f'methods {custom} on the HistoryBuffer class')
        for key in ('_log_history', '_count_history'):
            if not isinstance(state[key], np.ndarray):
                raise _refuse(f'a HistoryBuffer whose {key} is a '
                              f'{type(state[key]).__name__}, not an array')
        self.__class__ = HistoryBuffer
        self._set_default_statistics()
        self.__dict__.update({k: state[k] for k in _BUFFER_KEYS})


def _history_buffer_method(obj: Any, name: str) -> Callable:
    """``getattr`` as HistoryBuffer pickles use it, and nothing more."""
    if obj is _CheckedHistoryBuffer and name in _STATISTICS:
        return getattr(HistoryBuffer, name)
    raise _refuse(f'getattr({getattr(obj, "__qualname__", obj)!r}, {name!r}) '
                  'is not a HistoryBuffer statistics method')


def _numpy_globals() -> List[Any]:
    """numpy's pickle helpers under the module names numpy 1.x and 2.x use."""
    from numpy.core import multiarray
    pairs: List[Any] = [np.dtype, np.ndarray]
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        pairs += [(multiarray._reconstruct, f'{mod}._reconstruct'),
                  (multiarray.scalar, f'{mod}.scalar')]
    # numpy >= 1.25 pickles dtypes as instances of numpy.dtypes.*DType.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        pairs += [getattr(dtypes, n) for n in dir(dtypes)
                  if n.endswith('DType') and isinstance(
                      getattr(dtypes, n), type)]
    return pairs


def _safe_globals() -> List[Any]:
    """Everything beyond torch's allow-list one checkpoint load may use."""
    import _codecs

    from mmengine.config.config import ConfigDict
    return _numpy_globals() + [
        (_codecs.encode, '_codecs.encode'),  # numpy's raw bytes, as text
        (_CheckedHistoryBuffer, _HISTORY_BUFFER),
        (_history_buffer_method, 'builtins.getattr'),
        (_history_buffer_method, '__builtin__.getattr'),
        ConfigDict,
        set,
        frozenset,
        slice,
        complex,
        bytearray,
    ] + _USER_GLOBALS


def allow_checkpoint_globals(pairs: Iterable[Tuple[str, str]]) -> None:
    """Lets checkpoints contain more types (call it from trusted code only).

    Args:
        pairs: (module, name) pairs, e.g. ``[('my_pkg.stats', 'Record')]``;
            each is imported now and its instances may then be built (their
            ``__setstate__`` runs) by every later load.
    """
    for module, name in pairs:
        obj = importlib.import_module(module)
        for part in name.split('.'):
            obj = getattr(obj, part)
        _USER_GLOBALS.append((obj, f'{module}.{name}'))


def _torch_reason(err: Exception) -> str:
    """The line of torch's refusal that names the global or opcode.

    torch wraps it in paragraphs about its own API (``weights_only``
    defaults, a documentation link) that would mislead our users.
    """
    text = str(err)
    if 'WeightsUnpickler error:' in text:
        reason = text.split('WeightsUnpickler error:', 1)[1].strip()
        return reason.splitlines()[0].split('. Please use')[0]
    boilerplate = ('Weights only load failed', 'Check the documentation')
    paragraphs = [p.strip() for p in text.split('\n\n') if p.strip()]
    useful = [p for p in paragraphs if not p.startswith(boilerplate)]
    return (useful or paragraphs or [repr(err)])[0].splitlines()[0]


@contextmanager
def _refusals_named(source: str) -> Iterator[None]:
    """Turns torch's weights-only refusals into UntrustedCheckpointError."""
    try:
        yield
    except UntrustedCheckpointError as err:
        raise UntrustedCheckpointError(
            f'refused to load checkpoint {source}: {err}') from None
    except pickle.UnpicklingError as err:
        raise _refuse(f'refused to load checkpoint {source}: it is not a '
                      'plain weights/training-state file '
                      f'({_torch_reason(err)})') from None
    except RuntimeError as err:
        if 'TorchScript' not in str(err):
            raise
        raise _refuse(f'refused to load checkpoint {source}: it is a '
                      'TorchScript archive, which runs code when loaded '
                      '(use torch.jit.load on a file you trust)') from None


def safe_load(filename: Union[str, IO[bytes]],
              map_location: Optional[Any] = None,
              source: Optional[str] = None) -> Dict[str, Any]:
    """Loads a checkpoint without executing code from it.

    Args:
        filename: Path of the checkpoint, or a binary file object.
        map_location: As for :func:`torch.load`.
        source: How to name the file in errors (default: ``filename``).

    Returns:
        The checkpoint (usually a dict).

    Raises:
        FileNotFoundError: No such file.
        UntrustedCheckpointError: The file holds anything but weights and
            training state (unless ``FOCAL_RETINA_TRUST_CHECKPOINTS=1``).
    """
    if isinstance(filename, str):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'checkpoint {filename} does not exist')
    source = source or str(filename)
    if os.environ.get(TRUST_ENV) == '1':
        return torch.load(
            filename, map_location=map_location, weights_only=False)
    with _refusals_named(source), \
            torch.serialization.safe_globals(_safe_globals()):
        return torch.load(
            filename, map_location=map_location, weights_only=True)


# ---------------------------------------------------------------------------
# mmengine's loaders, re-registered so that every scheme ends in safe_load.
# The URL tables are looked up through ``mm_ckpt`` at call time (as mmengine
# does), so a patched or extended table is honoured.


def cache_path(url: str, model_dir: Optional[str] = None) -> str:
    """The file a URL's checkpoint is cached in and looked for first.

    That of ``torch.hub.load_state_dict_from_url`` (what mmengine's
    ``load_url`` is): ``<torch.hub.get_dir()>/checkpoints/<file name>``,
    i.e. ``$TORCH_HOME/hub/checkpoints`` (default
    ``~/.cache/torch/hub/checkpoints``), unless ``model_dir`` is given.
    """
    from torch.hub import get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    return osp.join(model_dir, osp.basename(urlparse(url).path))


def offline_message(url: str,
                    cached: str,
                    reason: str,
                    name: Optional[str] = None) -> str:
    """The one line that says what to do when ``url`` cannot be fetched."""
    what = f'{name} ({url})' if name else url
    return (f'cannot download checkpoint {what}: {reason}. Offline, fetch '
            f'that file elsewhere and put it at {cached} (looked for there '
            'first), or set load_from / init_cfg.checkpoint to a local copy; '
            'or train without it (load_from=None, '
            'model.backbone.init_cfg=None: from scratch, as '
            'configs/own_data/retina_r18_fpn_own_data.py does)')


def _reason(err: BaseException) -> str:
    reason = getattr(err, 'reason', None) or err
    text = str(reason).strip() or type(err).__name__
    return text.splitlines()[0]


def _download(url: str,
              model_dir: Optional[str] = None,
              name: Optional[str] = None) -> str:
    """Downloads ``url`` into torch's hub cache once (as mmengine does).

    Raises:
        CheckpointUnavailableError: Not cached and the download failed
            (no network, a blocked host, HTTP 404, ...).
    """
    from torch.hub import download_url_to_file
    cached = cache_path(url, model_dir)
    if osp.isfile(cached):
        return cached
    try:
        os.makedirs(osp.dirname(cached), exist_ok=True)
        download_url_to_file(url, cached, None, progress=False)
    except (OSError, http.client.HTTPException, ValueError) as err:
        # download_url_to_file writes a temporary file and renames it when
        # complete, so a failed download leaves no partial file behind.
        raise CheckpointUnavailableError(
            offline_message(url, cached, _reason(err), name)) from None
    return cached


def load_from_http(filename: str,
                   map_location: Optional[Any] = None,
                   model_dir: Optional[str] = None,
                   name: Optional[str] = None,
                   **kwargs) -> Dict[str, Any]:
    """http(s):// checkpoints: rank 0 downloads first, then all load."""
    rank, world_size = mm_ckpt.get_dist_info()
    if rank == 0:
        cached = _download(filename, model_dir, name)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            cached = _download(filename, model_dir, name)
    return safe_load(cached, map_location, source=f'{filename} ({cached})')


def torchvision_urls() -> Dict[str, str]:
    """torchvision's model names and URLs, as mmengine resolves them.

    Without torchvision installed (mmengine's table imports it), mmengine's
    own copy of torchvision 0.12's table (``resnet18``, ``resnet50``, ...).
    """
    try:
        return mm_ckpt.get_torchvision_models()
    except ImportError:
        import mmengine
        return mmengine.load(
            osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json'))


def load_from_torchvision(filename: str,
                          map_location: Optional[Any] = None
                          ) -> Dict[str, Any]:
    """torchvision:// and modelzoo:// names, resolved as mmengine does."""
    name = filename.split('://', 1)[1]
    urls = torchvision_urls()
    if name not in urls:
        import difflib
        close = difflib.get_close_matches(name, list(urls), n=3)
        raise CheckpointUnavailableError(
            f'{filename}: torchvision has no model {name!r}'
            f'{f" (did you mean {close})" if close else ""}')
    return load_from_http(urls[name], map_location=map_location, name=filename)


def load_from_openmmlab(filename: str,
                        map_location: Optional[Any] = None
                        ) -> Dict[str, Any]:
    """open-mmlab:// and openmmlab:// names, resolved as mmengine does."""
    name = filename.split('://', 1)[1]
    name = mm_ckpt.get_deprecated_model_names().get(name, name)
    url = mm_ckpt.get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location, name=filename)
    return safe_load(
        osp.join(mm_ckpt._get_mmengine_home(), url), map_location)


def load_from_mmcls(filename: str,
                    map_location: Optional[Any] = None) -> Dict[str, Any]:
    """mmcls:// names, resolved and converted as mmengine does."""
    url = mm_ckpt.get_mmcls_models()[filename[len('mmcls://'):]]
    return mm_ckpt._process_mmcls_checkpoint(
        load_from_http(url, map_location=map_location, name=filename))


def load_from_ceph(filename: str,
                   map_location: Optional[Any] = None,
                   backend: str = 'petrel') -> Dict[str, Any]:
    """s3:// and petrel:// objects, read into memory and loaded safely."""
    file_backend = mm_ckpt.get_file_backend(
        filename, backend_args={'backend': backend})
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return safe_load(buffer, map_location, source=filename)


def load_from_pavi(filename: str,
                   map_location: Optional[Any] = None) -> Dict[str, Any]:
    """pavi:// models, downloaded to a temporary folder and loaded safely."""
    from pavi import modelcloud
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        path = osp.join(tmp_dir, model.name)
        model.download(path)
        return safe_load(path, map_location, source=filename)


_SCHEMES = {
    '': safe_load,
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
    'pavi://': load_from_pavi,
}
for _prefixes, _loader in _SCHEMES.items():
    CheckpointLoader.register_scheme(_prefixes, _loader, force=True)
