"""Interleaved timing of the two models (stock, ours, stock, ours, ...)
under one option, and the medians and per-pair ratios of the times."""
import copy
import math
import statistics
import time
from typing import Dict, List

import torch

from .models import (PHASES, apply_option, infer_step, make_optimizer, sync,
                     train_step)


class Step:
    """A timed step of one model under one option."""

    def __init__(self, model, option: str, data: dict, device: str) -> None:
        self.model, self.option, self.data = model, option, data
        self.device = device
        self.optimizer = make_optimizer(model)
        self.bf16 = option == 'bf16'
        self.cl = option == 'channels_last'

    def __call__(self, phase: str) -> float:
        """Runs one ``phase`` step; returns its wall time in seconds."""
        model = self.model
        model.train(phase == 'train')
        sync(self.device)
        start = time.perf_counter()
        if phase == 'train':
            loss = train_step(model, self.optimizer, self.data, self.bf16,
                              self.cl, self.device)
            if not math.isfinite(loss):
                raise FloatingPointError(f'loss is {loss}')
        else:
            infer_step(model, self.data, self.bf16, self.cl, self.device)
        sync(self.device)
        return time.perf_counter() - start


def time_interleaved(steps: Dict[str, Step], phase: str, warmup: int,
                     reps: int) -> Dict[str, List[float]]:
    """Seconds per step of each model: ``warmup`` untimed rounds, then
    ``reps`` rounds of stock, ours, stock, ours, ..."""
    times = {name: [] for name in steps}
    for rnd in range(warmup + reps):
        for name, step in steps.items():
            t = step(phase)
            if rnd >= warmup:
                times[name].append(t)
    return times


def time_option(models: Dict, data: dict, option: str, device: str,
                warmup: int, reps: int) -> Dict:
    """Train and inference times of both models under ``option``.

    Returns:
        ``{phase: {model: [seconds per step]}}`` (inference: per image) or
        ``{phase: {'error': reason}}`` where a step failed, and
        ``first_call``: seconds of each model's first step of each phase
        (outside the timed rounds; it includes compiling for 'compile').
    """
    images = len(data['inputs'])
    if option == 'fuse_conv_bn':  # folded copies: they cannot train
        from projects.focal_retina.engine.fuse import fuse_for_inference
        models = {k: copy.deepcopy(m) for k, m in models.items()}
        for model in models.values():  # what tools/test.py runs
            fuse_for_inference(model)
    steps = {}
    for name, model in models.items():
        apply_option(model, option)
        steps[name] = Step(model, option, data, device)
    out = dict(first_call={name: {} for name in steps})
    try:
        for phase in PHASES:
            if option == 'fuse_conv_bn' and phase == 'train':
                out[phase] = dict(error='inference only (no BatchNorm left '
                                  'to train)')
                continue
            try:
                for name, step in steps.items():
                    out['first_call'][name][phase] = step(phase)
                times = time_interleaved(steps, phase, max(warmup - 1, 0),
                                         reps)
            except Exception as exc:  # e.g. an op without a bf16 kernel
                out[phase] = dict(error=f'{type(exc).__name__}: {exc}'[:300])
                continue
            if phase == 'infer':
                times = {k: [t / images for t in v] for k, v in times.items()}
            out[phase] = times
    finally:
        for model in models.values():
            model.to(memory_format=torch.contiguous_format)
    return out


def summarise(times: Dict[str, List[float]]) -> Dict:
    """Medians and per-pair ratios ours / stock of interleaved times."""
    pairs = [o / s for s, o in zip(times['stock'], times['ours'])]
    return dict(
        stock_ms=[t * 1e3 for t in times['stock']],
        ours_ms=[t * 1e3 for t in times['ours']],
        stock_median_ms=statistics.median(times['stock']) * 1e3,
        ours_median_ms=statistics.median(times['ours']) * 1e3,
        pair_ratios=pairs,
        median_pair_ratio=statistics.median(pairs),
        # the least disturbed rounds, on a machine shared with other jobs
        fastest_ratio=min(times['ours']) / min(times['stock']))
