"""FLOPs, the machine's conv throughput, and where the time of one step
goes (``--profile``)."""
import math
import statistics
import time
from typing import Callable, Dict, List

import torch

from .models import PHASES, infer_step, make_optimizer, sync


def count_macs(model, h: int, w: int, device: str) -> float:
    """Multiply-accumulates of the tensor-mode forward of one image."""
    from mmengine.analysis import FlopAnalyzer
    model.eval()
    x = torch.zeros(1, 3, h, w, device=device)
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (x, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return float(analyzer.total())


def conv_gflops(images: int, h: int, w: int, device: str, bf16: bool) -> float:
    """GFLOP/s of a 256 -> 256 3x3 conv on a P3-sized map (stride 8)."""
    hh, ww = math.ceil(h / 8), math.ceil(w / 8)
    dtype = torch.bfloat16 if bf16 else torch.float32
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device, dtype)
    x = torch.randn(images, 256, hh, ww, device=device, dtype=dtype)
    flops = 2 * images * hh * ww * 256 * 256 * 9
    times = []
    with torch.no_grad():
        for i in range(6):
            sync(device)
            start = time.perf_counter()
            conv(x)
            sync(device)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


class PhaseTimer:
    """Wall time per phase of a model's steps, from forward pre/post hooks
    on submodules and wrappers around methods of this model instance."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: Dict[str, float] = {}
        self._start: Dict[str, float] = {}
        self._undo: List[Callable] = []

    def _add(self, name: str, seconds: float) -> None:
        self.times[name] = self.times.get(name, 0.0) + seconds

    def module(self, name: str, module: torch.nn.Module) -> None:

        def pre(mod, args):
            sync(self.device)
            self._start[name] = time.perf_counter()

        def post(mod, args, out):
            sync(self.device)
            self._add(name, time.perf_counter() - self._start.pop(name))

        handles = [
            module.register_forward_pre_hook(pre),
            module.register_forward_hook(post)
        ]
        self._undo += [h.remove for h in handles]

    def method(self, name: str, obj, attr: str) -> None:
        func = getattr(obj, attr)

        def timed(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            out = func(*args, **kwargs)
            sync(self.device)
            self._add(name, time.perf_counter() - start)
            return out

        setattr(obj, attr, timed)
        self._undo.append(lambda: obj.__dict__.pop(attr, None))

    def remove(self) -> None:
        for undo in self._undo:
            undo()
        self._undo = []


def instrument(model, device: str) -> PhaseTimer:
    timer = PhaseTimer(device)
    head = model.bbox_head
    timer.module('data preprocessor', model.data_preprocessor)
    timer.module('backbone', model.backbone)
    timer.module('FPN', model.neck)
    timer.module('head forward', head)  # called as head(x) by loss/predict
    timer.method('loss_by_feat', head, 'loss_by_feat')
    timer.method('  anchors', head, 'get_anchors')
    timer.method('  targets (get_targets)', head, 'get_targets')
    timer.module('  loss_cls', head.loss_cls)
    timer.module('  loss_bbox', head.loss_bbox)
    timer.method('post-processing (predict_by_feat)', head, 'predict_by_feat')
    timer.method('  NMS + rescale (_bbox_post_process)', head,
                 '_bbox_post_process')
    return timer


def _profiled_train_step(model, optimizer, data: dict, timer: PhaseTimer,
                         device: str) -> None:
    """``train_step`` with backward and the optimizer step timed apart."""
    batch = model.data_preprocessor(data, True)
    loss, _ = model.parse_losses(model(**batch, mode='loss'))
    sync(device)
    t_fwd = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync(device)
    t_bwd = time.perf_counter()
    optimizer.step()
    sync(device)
    timer.times['backward'] = t_bwd - t_fwd
    timer.times['optimizer step'] = time.perf_counter() - t_bwd


def profile_model(model, data: dict, device: str) -> Dict[str, Dict]:
    """Phase times (ms) of one training step and one inference (run after
    the timed rounds, which warmed the model up)."""
    optimizer = make_optimizer(model)
    out = {}
    for phase in PHASES:
        model.train(phase == 'train')
        timer = instrument(model, device)
        sync(device)
        start = time.perf_counter()
        if phase == 'train':
            _profiled_train_step(model, optimizer, data, timer, device)
        else:
            infer_step(model, data, False, False, device)
            sync(device)
        timer.remove()
        times = timer.times
        times['total'] = time.perf_counter() - start
        if 'loss_by_feat' in times:
            inner = sum(
                times.get(k, 0.0)
                for k in ('  anchors', '  targets (get_targets)', '  loss_cls',
                          '  loss_bbox'))
            times['  rest of loss_by_feat'] = times['loss_by_feat'] - inner
        named = sum(v for k, v in times.items()
                    if not k.startswith('  ') and k != 'total')
        times['other (detector glue, parse_losses, ...)'] = \
            times['total'] - named
        out[phase] = {k: v * 1e3 for k, v in times.items()}
    return out


PROFILE_ORDER = {
    'train':
    ('data preprocessor', 'backbone', 'FPN', 'head forward', 'loss_by_feat',
     '  anchors', '  targets (get_targets)', '  loss_cls', '  loss_bbox',
     '  rest of loss_by_feat', 'backward', 'optimizer step',
     'other (detector glue, parse_losses, ...)', 'total'),
    'infer': ('data preprocessor', 'backbone', 'FPN', 'head forward',
              'post-processing (predict_by_feat)',
              '  NMS + rescale (_bbox_post_process)',
              'other (detector glue, parse_losses, ...)', 'total'),
}
