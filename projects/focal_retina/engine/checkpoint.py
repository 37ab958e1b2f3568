"""Safe loading of mmengine checkpoints on torch >= 2.6.

torch 2.6 made ``torch.load`` default to ``weights_only=True``; mmengine
0.10.7 checkpoints hold more than tensors (the message hub's history
buffers, numpy scalars and arrays, the config text), so ``load_from`` and
``--resume`` fail with an UnpicklingError. Passing ``weights_only=False``
would trust arbitrary pickles, and allow-listing ``builtins.getattr`` (which
the history buffers need: they pickle ``getattr(HistoryBuffer, 'min')``)
would let a file reach any callable.

Instead, :class:`RestrictedUnpickler` resolves only the (module, name) pairs
torch's own weights-only loader allows plus the exact types mmengine
checkpoints contain, and answers ``getattr`` only for listed (class,
attribute) pairs. Anything else is refused with
:class:`UntrustedCheckpointError`, which names the global and how to load a
trusted file anyway. Importing this module replaces mmengine's loader for
local paths (the ``''`` scheme of ``CheckpointLoader``), so the Runner,
``load_from``, ``--resume`` and DetInferencer all go through it.
"""
import _compat_pickle
import os
import os.path as osp
import pickle
import types
from typing import Any, Dict, Iterable, Optional, Set, Tuple

import torch
from mmengine.runner.checkpoint import CheckpointLoader

TRUST_ENV = 'FOCAL_RETINA_TRUST_CHECKPOINTS'

# (module, name) pairs an mmengine/mmdet checkpoint may reference, beyond
# torch's own weights-only allow-list.
_EXTRA_GLOBALS: Set[Tuple[str, str]] = {
    ('mmengine.logging.history_buffer', 'HistoryBuffer'),
    ('mmengine.config.config', 'ConfigDict'),
    ('collections', 'OrderedDict'),
    ('collections', 'deque'),
    ('collections', 'defaultdict'),
    ('numpy', 'dtype'),
    ('numpy', 'ndarray'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', 'scalar'),
    ('_codecs', 'encode'),  # numpy pickles raw bytes as latin-1 text
    ('builtins', 'set'),
    ('builtins', 'frozenset'),
    ('builtins', 'slice'),
    ('builtins', 'complex'),
    ('builtins', 'bytearray'),
}
# numpy scalar dtypes, e.g. numpy.float64 stored by the message hub.
_EXTRA_GLOBALS |= {('numpy.dtypes', f'{k}DType')
                   for k in ('Float64', 'Float32', 'Int64', 'Int32', 'Bool',
                             'Float16', 'UInt8', 'Int8', 'Int16')}

# The only attributes ``getattr`` may fetch while unpickling.
_ALLOWED_GETATTR: Set[Tuple[str, str]] = {
    ('mmengine.logging.history_buffer.HistoryBuffer', name)
    for name in ('min', 'max', 'mean', 'current')
}


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint references a global outside the allow-list."""


def allow_checkpoint_globals(pairs: Iterable[Tuple[str, str]]) -> None:
    """Adds (module, name) pairs a trusted extension's checkpoints need."""
    _EXTRA_GLOBALS.update(pairs)


def _torch_allowed() -> Dict[str, Any]:
    """torch's weights-only allow-list as {'module.name': object}."""
    from torch import _weights_only_unpickler as wou
    allowed = dict(wou._get_allowed_globals())
    allowed.update(wou._get_user_allowed_globals())
    return allowed


def _qualname(obj: Any) -> str:
    return f'{getattr(obj, "__module__", "?")}.' \
           f'{getattr(obj, "__qualname__", type(obj).__name__)}'


def _guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    if (_qualname(obj), name) not in _ALLOWED_GETATTR:
        raise UntrustedCheckpointError(
            f'refusing getattr({_qualname(obj)}, {name!r}) while loading a '
            f'checkpoint; set {TRUST_ENV}=1 only for a file you trust')
    return getattr(obj, name, *default)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only allow-listed globals."""

    source = '<checkpoint>'

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 (torch.save's default) names Python 2 modules, e.g.
        # __builtin__: map them as pickle's own find_class would.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) == ('builtins', 'getattr'):
            return _guarded_getattr
        if (module, name) in _EXTRA_GLOBALS:
            return super().find_class(module, name)
        allowed = _torch_allowed()
        if f'{module}.{name}' in allowed:
            return allowed[f'{module}.{name}']
        raise UntrustedCheckpointError(
            f'{self.source} references {module}.{name}, which is not a type '
            'that mmengine/mmdet checkpoints contain, so it was not loaded. '
            f'If you trust this file, load it with {TRUST_ENV}=1 in the '
            'environment, or register the type with projects.focal_retina.'
            f'engine.checkpoint.allow_checkpoint_globals([({module!r}, '
            f'{name!r})])')


def _pickle_module(source: str) -> types.ModuleType:
    """A module object torch.load accepts as ``pickle_module``."""
    module = types.ModuleType('focal_retina_restricted_pickle')
    module.__dict__.update(pickle.__dict__)
    module.Unpickler = type('Unpickler', (RestrictedUnpickler, ),
                            {'source': source})
    return module


def safe_load(filename: str,
              map_location: Optional[Any] = None) -> Dict[str, Any]:
    """Loads a local checkpoint without executing arbitrary pickled code.

    Args:
        filename: Path of the checkpoint.
        map_location: As for :func:`torch.load`.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: No such file.
        UntrustedCheckpointError: The file references a type outside the
            allow-list (unless ``FOCAL_RETINA_TRUST_CHECKPOINTS=1``).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    if os.environ.get(TRUST_ENV) == '1':
        return torch.load(
            filename, map_location=map_location, weights_only=False)
    return torch.load(
        filename,
        map_location=map_location,
        weights_only=False,
        pickle_module=_pickle_module(filename))


# Replace mmengine's loader of local paths (same signature).
CheckpointLoader.register_scheme(prefixes='', force=True)(safe_load)
