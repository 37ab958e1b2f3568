"""Named errors for misspelt arguments and types of our components.

A config key typo (``gama=2.0``) would otherwise surface as Python's
``__init__() got an unexpected keyword argument 'gama'`` (or, for a class
taking ``**kwargs``, deep inside a parent class), and an unknown ``type`` as
mmengine's "not in the registry" without a hint. Both errors here name the
key and list the valid ones, closest match first.
"""
import difflib
import functools
import inspect
from typing import Iterable, List, Type, TypeVar

T = TypeVar('T')


def closest_first(name: str, valid: Iterable[str]) -> List[str]:
    """``valid`` sorted by similarity to ``name`` (most similar first)."""
    return sorted(
        set(valid),
        key=lambda v:
        (-difflib.SequenceMatcher(None, name.lower(), v.lower()).ratio(), v))


def accepted_arguments(cls: type) -> List[str]:
    """Keyword arguments ``cls(...)`` accepts: its ``__init__``'s and, while
    an ``__init__`` forwards ``**kwargs``, those of its parents."""
    names: List[str] = []
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        init = inspect.unwrap(vars(klass)['__init__'])
        params = list(inspect.signature(init).parameters.values())[1:]
        names += [
            p.name for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def check_arguments(cls: Type[T]) -> Type[T]:
    """Class decorator: an unknown keyword argument raises a ``TypeError``
    that names it, suggests the closest valid one and lists them all."""
    init = cls.__init__
    valid = None  # computed on first use: the parents are complete then

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        nonlocal valid
        if valid is None:
            valid = accepted_arguments(cls)
        unknown = [k for k in kwargs if k not in valid]
        if unknown:
            key = unknown[0]
            ranked = closest_first(key, valid)
            raise TypeError(f'{cls.__name__}: unknown argument {key!r}; did '
                            f'you mean {ranked[0]!r}? Valid arguments: '
                            f'{", ".join(ranked)}')
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def check_config_types(cfg,
                       registries,
                       where: str = 'model',
                       skip: Iterable[str] = ('nms', 'init_cfg')) -> None:
    """Raises ``KeyError`` for the first ``type`` in the config tree
    ``cfg`` that none of ``registries`` knows, naming its key path and the
    closest registered names.

    Args:
        cfg: A (nested) dict/list of component configs, e.g. ``cfg.model``.
        registries: mmengine registries to look the types up in (with
            their parents, as ``build`` does).
        where: The key path of ``cfg``, for the message.
        skip: Keys whose ``type`` is not a registry name (mmcv's NMS op
            names, weight initialisers) and are not checked.
    """
    if isinstance(cfg, dict):
        typ = cfg.get('type')
        if isinstance(typ, str) and '.' not in typ and not any(
                r.get(typ) is not None for r in registries):
            known = set()
            for reg in registries:
                while reg is not None:
                    known |= set(reg.module_dict)
                    reg = reg.parent
            ranked = closest_first(typ, known)[:5]
            raise KeyError(f'{where}.type={typ!r} is not a registered '
                           f'component; closest: {", ".join(ranked)}')
        for key, value in cfg.items():
            if key not in skip:
                check_config_types(value, registries, f'{where}.{key}', skip)
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            check_config_types(value, registries, f'{where}[{i}]', skip)
