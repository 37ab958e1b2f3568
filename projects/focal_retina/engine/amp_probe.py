"""``--amp auto``: bfloat16 autocast on the CPU only where it is faster.

Whether bf16 autocast speeds up a CPU training step depends on the CPU, not
on a flag: with AMX tile instructions (Sapphire Rapids and later) oneDNN's
bf16 convolutions are much faster than float32, but a CPU that lists
``avx512_bf16`` without AMX converts to and from bf16 around every
convolution and ran the main job's training step, a ResNet-50 forward and
mmdet's RetinaNet R-18 slower under bf16 autocast than in float32. So the
choice is measured: :func:`amp_decision` times a training step (forward in
the model's ``'tensor'`` mode, backward) of the configured model on a small
random batch in both precisions, interleaved, and keeps bf16 only when it
is faster by more than the noise margin. The result is cached per machine
in ``$XDG_CACHE_HOME/focal_retina/amp_probe.json`` (``~/.cache/...``),
keyed by CPU model and flags, torch version, torch threads, the model
config and the probe's input shape; delete the file to probe again.

On CUDA (and other accelerators) ``--amp auto`` means mmengine's float16
``AmpOptimWrapper`` without probing: tensor cores make it the faster one.
"""
import datetime
import hashlib
import json
import os
import os.path as osp
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

AMP_MODES = ('on', 'off', 'auto')
# bf16 is chosen only when its step takes less than this share of the fp32
# step: within a few percent (noise on a shared machine) float32 keeps the
# full precision.
BF16_MARGIN = 0.95
PROBE_BATCH = 1
PROBE_SIZE = 256

Measure = Callable[[], Tuple[float, float]]


@dataclass
class AmpDecision:
    """The outcome of ``--amp auto``.

    Attributes:
        use_amp: Whether to train with mixed precision.
        line: One line for the log: the choice and why.
        fp32_s: Median seconds of a probe step in float32 (None: no probe).
        bf16_s: Median seconds of a probe step under bf16 autocast.
        cached: The timings came from the cache.
    """
    use_amp: bool
    line: str
    fp32_s: Optional[float] = None
    bf16_s: Optional[float] = None
    cached: bool = False


def cache_file() -> str:
    """``$XDG_CACHE_HOME/focal_retina/amp_probe.json`` (``~/.cache`` when
    the variable is unset)."""
    root = os.environ.get('XDG_CACHE_HOME') or osp.join(
        osp.expanduser('~'), '.cache')
    return osp.join(root, 'focal_retina', 'amp_probe.json')


def cpu_model() -> Tuple[str, str]:
    """(model name, a short hash of the flags) from /proc/cpuinfo; the flags
    tell apart virtual CPUs that share a vague name ('AMD EPYC')."""
    name, flags = '', ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and not name:
                    name = value.strip()
                elif key in ('flags', 'Features') and not flags:
                    flags = ' '.join(sorted(value.split()))
    except OSError:  # not Linux
        pass
    name = name or platform.processor() or platform.machine()
    return name, hashlib.sha256(flags.encode()).hexdigest()[:12]


def _model_hash(model_cfg: Any) -> str:
    """A hash of the model config without train_cfg / test_cfg, which the
    probe does not run (a score threshold does not change the step)."""
    cfg = dict(model_cfg)
    for key in ('train_cfg', 'test_cfg'):
        cfg.pop(key, None)
    text = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def probe_key(model_cfg: Any,
              batch: int = PROBE_BATCH,
              size: int = PROBE_SIZE,
              threads: Optional[int] = None) -> Dict[str, Any]:
    """What a cached probe result depends on."""
    name, flags = cpu_model()
    return dict(
        cpu=name,
        cpu_flags=flags,
        torch=torch.__version__,
        threads=torch.get_num_threads() if threads is None else threads,
        model=_model_hash(model_cfg),
        input=[batch, 3, size, size])


def _key_id(key: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key,
                                     sort_keys=True).encode()).hexdigest()[:20]


def read_cache(path: str) -> Dict[str, Any]:
    """The cache's entries ({} when missing or unreadable)."""
    try:
        with open(path) as f:
            data = json.load(f)
        entries = data.get('entries')
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def write_cache(path: str, key: Dict[str, Any], fp32_s: float,
                bf16_s: float) -> Optional[str]:
    """Adds one entry (atomically: a temporary file renamed over the cache);
    returns why it could not, or None."""
    entries = read_cache(path)
    entries[_key_id(key)] = dict(
        key=key,
        fp32_s=fp32_s,
        bf16_s=bf16_s,
        date=datetime.date.today().isoformat())
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(tmp, 'w') as f:
            json.dump(dict(version=1, entries=entries), f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        return f'{type(exc).__name__}: {exc}'
    return None


def _tensors(out: Any):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict):
        for value in out.values():
            yield from _tensors(value)
    elif isinstance(out, (list, tuple)):
        for value in out:
            yield from _tensors(value)


def time_steps(model: nn.Module,
               batch: int = PROBE_BATCH,
               size: int = PROBE_SIZE,
               min_pairs: int = 3,
               max_pairs: int = 9,
               budget_s: float = 4.0) -> Tuple[float, float]:
    """Median seconds of a training step of ``model`` (forward in mmdet's
    ``'tensor'`` mode, the sum of its outputs backward) in float32 and under
    CPU bf16 autocast, interleaved so that a change of machine load hits
    both; at least ``min_pairs`` pairs, more while ``budget_s`` lasts."""
    model.train()
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, size, size, generator=gen)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            out = model(inputs, mode='tensor')
        loss = sum(t.float().sum() for t in _tensors(out))
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(False)  # warm-up: oneDNN primitives, allocator, autocast caches
    step(True)
    times: Dict[bool, list] = {False: [], True: []}
    start = time.perf_counter()
    for i in range(max_pairs):
        for bf16 in ((False, True) if i % 2 == 0 else (True, False)):
            times[bf16].append(step(bf16))
        if i + 1 >= min_pairs and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times[False]), statistics.median(times[True])


def build_measure(model_cfg: Any,
                  batch: int = PROBE_BATCH,
                  size: int = PROBE_SIZE) -> Measure:
    """A measure for :func:`amp_decision`: builds the configured model on
    the CPU (random weights: no checkpoint is read) and times it."""

    def measure() -> Tuple[float, float]:
        from mmdet.registry import MODELS
        from mmengine.registry import DefaultScope
        with DefaultScope.overwrite_default_scope('mmdet'):
            model = MODELS.build(model_cfg)
        return time_steps(model, batch, size)

    return measure


def amp_decision(model_cfg: Any,
                 device: str,
                 measure: Optional[Measure] = None,
                 path: Optional[str] = None,
                 batch: int = PROBE_BATCH,
                 size: int = PROBE_SIZE) -> AmpDecision:
    """``--amp auto``: mixed precision or not, and why.

    Args:
        model_cfg: The ``model`` section of the config.
        device: The device type training runs on ('cpu', 'cuda', ...).
        measure: Returns (fp32 seconds, bf16 seconds) of a step; default
            :func:`build_measure` of ``model_cfg``. Called only when the
            cache has no entry.
        path: The cache file; default :func:`cache_file`.
        batch: Images of the probe's batch (part of the cache key).
        size: Side of the probe's square images (part of the cache key).

    Returns:
        The decision with its log line.
    """
    if device != 'cpu':
        return AmpDecision(
            True, f'--amp auto: float16 autocast on {device} (mmengine '
            'AmpOptimWrapper; not probed)')
    path = cache_file() if path is None else path
    key = probe_key(model_cfg, batch, size)
    entry = read_cache(path).get(_key_id(key))
    cached = isinstance(entry, dict) and entry.get('key') == key
    if cached:
        fp32_s, bf16_s = float(entry['fp32_s']), float(entry['bf16_s'])
        where = f'cached {entry.get("date", "")} in {path}'
    else:
        try:
            fp32_s, bf16_s = (measure
                              or build_measure(model_cfg, batch, size))()
        except Exception as exc:  # a model without a tensor-mode forward
            return AmpDecision(
                False, '--amp auto: bf16 autocast off, float32: the probe '
                f'failed ({type(exc).__name__}: {exc}); --amp on forces bf16')
        problem = write_cache(path, key, fp32_s, bf16_s)
        where = 'probed now, ' + (f'not cached: {problem}'
                                  if problem else f'cached in {path}')
    use_amp = bf16_s < BF16_MARGIN * fp32_s
    verdict = ('bf16 autocast on' if use_amp else 'bf16 autocast off, float32')
    line = (f'--amp auto: {verdict}: a training step of {batch} x {size} px '
            f'took {fp32_s:.3f} s in float32, {bf16_s:.3f} s in bf16 '
            f'({bf16_s / fp32_s:.2f}x; bf16 needs < {BF16_MARGIN}x) on '
            f'{key["cpu"]}, {key["threads"]} thread'
            f'{"" if key["threads"] == 1 else "s"} ({where})')
    return AmpDecision(use_amp, line, fp32_s, bf16_s, cached)


def resolve_amp(mode: str,
                model_cfg: Any,
                device: str,
                measure: Optional[Measure] = None,
                path: Optional[str] = None) -> Tuple[bool, Optional[str]]:
    """``--amp MODE`` of the tools: whether to enable mixed precision.

    'on' and 'off' are taken as said; 'auto' decides with
    :func:`amp_decision` on rank 0 and hands rank 0's choice to every
    process of a distributed run (one precision for all; the other ranks
    wait, idle, while rank 0 probes).

    Returns:
        (use mixed precision, the line saying why: for 'auto' only, and on
        rank 0 only).
    """
    if mode not in AMP_MODES:
        raise ValueError(f'--amp {mode!r}: expected one of {AMP_MODES}')
    if mode != 'auto':
        return mode == 'on', None
    from mmengine.dist import broadcast_object_list, get_rank, is_distributed
    choice, line = [None], None
    if get_rank() == 0:
        decision = amp_decision(model_cfg, device, measure, path)
        choice, line = [decision.use_amp], decision.line
    if is_distributed():
        broadcast_object_list(choice, src=0)
    return bool(choice[0]), line
