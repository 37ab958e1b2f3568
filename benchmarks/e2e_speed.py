"""End-to-end speed: stock mmdet RetinaNet against our paper config.

Two models on identical inputs and weights:

* ``stock``: mmdet 3.3's own ``retinanet_r50_fpn_1x_coco.py`` (read from
  the installed mmdet package: ``RetinaHead``, mmdet ``FocalLoss`` -- a
  Python one-hot path on the CPU --, L1 box loss, no ReLU before P7);
* ``ours``: ``configs/retina_r50_fpn_1x.py`` (``FocalRetinaHead``, the
  fused ``FocalFamilyLoss``, smooth L1, ReLU before P7, global normaliser).

Both with the backbone's ``init_cfg`` off (no download), built with the
same seed; every stock tensor whose name and shape exist in ours is then
copied into ours (the architectures share all parameters; the count is
printed). The input is synthetic: ``--images`` uint8 images per size
(``--sizes``, default 608x800 and 800x1333) with 7 random boxes each,
passed through each model's own data preprocessor (part of every timed
step, as in mmengine's ``train_step`` / ``test_step``).

Randomly initialised heads score every anchor at the prior (0.01), below
the 0.05 test threshold, so inference would skip post-processing. The
last classification bias of both models is therefore shifted (the same
value in both) so that ``--pass-fraction`` (default 0.1%) of the
(anchor, class) scores of the benchmark images pass the threshold: top-k,
box decoding and NMS then have a trained detector's kind of workload.

Measured, per size:

* train step: data preprocessor + forward in loss mode + backward + SGD
  step (lr 0 so every repetition runs on the same weights; momentum and
  weight decay are still computed), ``--warmup`` steps, then ``--reps``
  steps of each model interleaved (stock, ours, stock, ours, ...);
  per-pair ratios ours / stock and medians;
* inference per image: ``model.test_step`` (preprocessor, forward,
  post-processing with rescale) under ``torch.no_grad`` on the same batch,
  divided by the number of images; interleaved likewise;
* peak memory, fp32: every measurement in a fresh subprocess. On the CPU,
  the kernel's peak RSS (``VmHWM`` in /proc/self/status, reset through
  /proc/self/clear_refs after the model and input are built) minus the RSS
  at that point, over two training steps (the first one allocates the
  gradients and the momentum buffers) or one inference; tracemalloc does
  not see torch's allocations. On CUDA, ``torch.cuda.max_memory_allocated``
  above the allocation at the same point;
* each opt-in option separately, both models under it: ``bf16``
  (``torch.autocast`` bfloat16 around the forward), ``channels_last``
  (weights and input batch), ``compile`` (``torch.compile`` of the
  backbone, the FPN and the head's forward -- the tensor parts, i.e. almost
  all FLOPs; target assignment and post-processing have data-dependent
  shapes). ``compile`` runs in a subprocess with ``--compile-timeout``; a
  failure or a timeout is reported as ``n/a`` with the reason;
* FLOPs: ``mmengine.analysis.FlopAnalyzer`` on the tensor-mode forward of
  one image (it counts multiply-accumulates; GFLOP = 2 x GMAC), and a
  256-channel 3x3 convolution on a P3-sized map (batch ``--images``) timed
  in the same run: the machine's practical conv throughput, so that the
  achieved GFLOP/s show the distance to it. A training step is counted as
  3 forwards (forward + two backward convolutions per forward one).

Targets (issue 14): train step ours / stock <= 0.70 and inference per
image ours / stock <= 0.90, both in fp32; the script says whether the
measured medians meet them.

``--profile``: one training step and one inference of each model after
the timed rounds (which warm them up), split with forward hooks and
wrappers on the model instances (nothing global is patched): data
preprocessor, backbone, FPN, head
forward, anchors, target assignment (``head.get_targets``), the loss
modules, the rest of ``loss_by_feat``, backward, optimizer step; and for
inference the post-processing (``predict_by_feat``) and, inside it,
``_bbox_post_process`` (score filter, rescale, NMS).

Usage: python benchmarks/e2e_speed.py [--sizes 608x800 800x1333]
       [--images 2] [--reps 5] [--warmup 1] [--device cpu|cuda]
       [--options fp32 bf16 channels_last compile] [--threads N]
       [--profile] [--out DIR] [--quick]
``--quick``: 2 images of 256x320, 1 warm-up + 2 reps, fp32, bf16 and
channels-last (no compile), one thread, the memory workers side by side:
a check that it all runs in about two minutes, not a measurement.
"""
import argparse
import contextlib
import copy
import gc
import json
import math
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.machine import cpu_model  # noqa: E402

OUR_CONFIG = osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py')
MODEL_NAMES = ('stock', 'ours')
OPTIONS = ('fp32', 'bf16', 'channels_last', 'compile')
PHASES = ('train', 'infer')
TARGETS = dict(train=0.70, infer=0.90)  # ours / stock, fp32 (issue 14)
BOXES_PER_IMAGE = 7  # COCO's mean
RESULT = 'RESULT '  # prefix of a worker's JSON line on stdout


def stock_config_path() -> str:
    """mmdet's own RetinaNet R-50 1x config, from the installed package."""
    import mmdet
    return osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'configs', 'retinanet',
        'retinanet_r50_fpn_1x_coco.py')


def parse_size(text: str) -> Tuple[int, int]:
    """``'608x800'`` -> (608, 800): height x width."""
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'size {text!r}: expected HEIGHTxWIDTH, e.g. 608x800')
    if h < 64 or w < 64:
        raise argparse.ArgumentTypeError(f'size {text!r}: at least 64x64')
    return h, w


def size_name(size: Tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def quiet_mmengine() -> None:
    """init_weights logs every parameter, FlopAnalyzer every unsupported
    op, at INFO / WARNING level: keep the benchmark output readable."""
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('ERROR')


def build_model(name: str, seed: int = 0) -> torch.nn.Module:
    """One of the two models, randomly initialised with ``seed``."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import projects.focal_retina  # noqa: F401  (registers components)
    init_default_scope('mmdet')
    path = stock_config_path() if name == 'stock' else OUR_CONFIG
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # no pretrained weights here
    quiet_mmengine()
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def copy_shared_weights(src: torch.nn.Module,
                        dst: torch.nn.Module) -> Tuple[int, int]:
    """Copies every tensor of ``src`` whose name and shape ``dst`` has.

    Returns:
        (tensors copied, tensors of ``dst`` left as they were).
    """
    theirs = dst.state_dict()
    shared = {
        k: v
        for k, v in src.state_dict().items()
        if k in theirs and theirs[k].shape == v.shape
    }
    dst.load_state_dict(shared, strict=False)
    return len(shared), len(theirs) - len(shared)


def make_data(images: int, h: int, w: int, seed: int = 0) -> dict:
    """Raw model inputs (uint8 images, samples with 7 random boxes of
    32-300 px), as a dataloader hands them to ``train_step``."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(images):
        inputs.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        wh = torch.rand(BOXES_PER_IMAGE, 2, generator=g) * 268 + 32
        wh = torch.minimum(wh, torch.tensor([w - 1., h - 1.]))
        xy = torch.rand(
            BOXES_PER_IMAGE, 2, generator=g) * (
                torch.tensor([w, h]) - wh)
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, 80, (BOXES_PER_IMAGE, ), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def calibrate_bias(model: torch.nn.Module,
                   data: dict,
                   pass_fraction: float,
                   seed: int = 0) -> float:
    """The classification bias with which ``pass_fraction`` of the
    (anchor, class) scores of ``data`` exceed the test score threshold.

    Random heads give logits of bias + tiny noise; the bias is shifted so
    that the noise's upper ``pass_fraction`` quantile lands on the
    threshold (estimated on a sample of 10^6 scores).
    """
    model.eval()
    with torch.no_grad():
        batch = model.data_preprocessor(copy.deepcopy(data), False)
        cls_scores, _ = model(batch['inputs'], mode='tensor')
    logits = torch.cat([c.flatten() for c in cls_scores]).float()
    g = torch.Generator(device=logits.device).manual_seed(seed)
    sample = logits[torch.randint(
        0,
        logits.numel(), (min(logits.numel(), 10**6), ),
        generator=g,
        device=logits.device)]
    q = torch.quantile(sample, 1.0 - pass_fraction).item()
    thr = model.bbox_head.test_cfg.score_thr
    bias = model.bbox_head.retina_cls.bias
    return bias.mean().item() + math.log(thr / (1 - thr)) - q


def set_cls_bias(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(value)


def build_pair(device: str, data: dict,
               pass_fraction: float) -> Tuple[Dict, dict]:
    """Both models with the same weights, on ``device``, and facts about
    them (copied tensors, bias, the fraction of scores that passes)."""
    models = {name: build_model(name) for name in MODEL_NAMES}
    copied, kept = copy_shared_weights(models['stock'], models['ours'])
    for model in models.values():
        model.to(device)
    bias = calibrate_bias(models['stock'], data, pass_fraction)
    for model in models.values():
        set_cls_bias(model, bias)
    info = dict(
        copied_tensors=copied,
        own_tensors=kept,
        cls_bias=bias,
        pass_fraction=pass_fraction)
    return models, info


@contextlib.contextmanager
def autocast(device: str, enabled: bool):
    if not enabled:
        yield
        return
    with torch.autocast(device, dtype=torch.bfloat16):
        yield


def train_step(model, optimizer, data: dict, bf16: bool, channels_last: bool,
               device: str) -> float:
    """One training step as mmengine's ``train_step`` runs it (its
    ``OptimWrapper.update_params`` is zero_grad, backward, step); returns
    the loss."""
    batch = model.data_preprocessor(data, True)
    if channels_last:
        batch['inputs'] = batch['inputs'].contiguous(
            memory_format=torch.channels_last)
    with autocast(device, bf16):
        losses = model(**batch, mode='loss')
    loss, _ = model.parse_losses(losses)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def infer_step(model, data: dict, bf16: bool, channels_last: bool,
               device: str) -> int:
    """``test_step`` (preprocessor, forward, post-processing with rescale);
    returns the number of detections (so that nothing is skipped).

    With ``bf16`` the network (backbone, FPN, head) runs under autocast
    and the post-processing in float32: mmcv's CPU ``nms`` has no bfloat16
    kernel ("expected scalar type Float but found BFloat16"), so mmdet's
    ``predict`` under autocast fails as soon as one box passes the score
    threshold.
    """
    with torch.no_grad():
        batch = model.data_preprocessor(data, False)
        inputs, samples = batch['inputs'], batch['data_samples']
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if not bf16:
            results = model(inputs, samples, mode='predict')
        else:  # SingleStageDetector.predict, split at the head's output
            with autocast(device, True):
                outs = model.bbox_head(model.extract_feat(inputs))
            outs = [[t.float() for t in level] for level in outs]
            preds = model.bbox_head.predict_by_feat(
                *outs,
                batch_img_metas=[s.metainfo for s in samples],
                rescale=True)
            results = model.add_pred_to_datasample(samples, preds)
    return sum(len(r.pred_instances) for r in results)


def make_optimizer(model) -> torch.optim.Optimizer:
    """The paper's / mmdet's SGD (momentum 0.9, wd 1e-4) at lr 0."""
    return torch.optim.SGD(
        model.parameters(), lr=0.0, momentum=0.9, weight_decay=1e-4)


def apply_option(model, option: str) -> None:
    """Puts ``model`` in the layout / compiled form of ``option``."""
    fmt = torch.channels_last if option == 'channels_last' else \
        torch.contiguous_format
    model.to(memory_format=fmt)
    if option == 'compile':
        model.backbone = torch.compile(model.backbone)
        model.neck = torch.compile(model.neck)
        model.bbox_head.forward = torch.compile(model.bbox_head.forward)


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
    steps = {}
    for name, model in models.items():
        apply_option(model, option)
        steps[name] = Step(model, option, data, device)
    out = dict(first_call={name: {} for name in steps})
    try:
        for phase in PHASES:
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


# ---------------------------------------------------------------- workers


def start_worker(task: dict) -> subprocess.Popen:
    """Starts ``task`` in a fresh ``python e2e_speed.py --worker`` process."""
    threads = task.get('threads') or torch.get_num_threads()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, osp.abspath(__file__), '--worker', json.dumps(task)]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env)


def finish_worker(proc: subprocess.Popen,
                  timeout: Optional[float] = None) -> dict:
    """The result of a worker of :func:`start_worker`.

    Returns:
        The worker's result dict, or ``{'error': reason}`` when it fails
        or outruns ``timeout`` seconds (it is then killed).
    """
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return dict(error=f'did not finish in {timeout:.0f} s')
    lines = [
        line[len(RESULT):] for line in stdout.splitlines()
        if line.startswith(RESULT)
    ]
    if proc.returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or ['no output'])[-1]
        return dict(error=f'exit {proc.returncode}: {tail[:300]}')
    return json.loads(lines[-1])


def run_workers(tasks: List[dict], parallel: bool) -> List[dict]:
    """Results of ``tasks``, one fresh process each; ``parallel`` runs
    them at the same time (right for peak memory, which is per process,
    not for times)."""
    if parallel:
        return [finish_worker(p) for p in [start_worker(t) for t in tasks]]
    return [finish_worker(start_worker(t)) for t in tasks]


def _status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{key} not in /proc/self/status')


def memory_worker(task: dict) -> dict:
    """Peak memory of one model's training steps or inference, in MiB
    above the built model and input (run in a fresh process)."""
    device, phase = task['device'], task['phase']
    data = make_data(task['images'], *task['size'])
    model = build_model(task['model']).to(device)
    set_cls_bias(model, task['cls_bias'])
    step = Step(model, 'fp32', data, device)
    steps = 2 if phase == 'train' else 1  # the first allocates the grads
    gc.collect()
    if device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            step(phase)
        peak = torch.cuda.max_memory_allocated() - base
        return dict(peak_mib=peak / 2**20, method='cuda max_memory_allocated')
    base = _status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM (peak RSS) to the current RSS
    for _ in range(steps):
        step(phase)
    return dict(
        peak_mib=(_status_kib('VmHWM') - base) / 1024,
        process_peak_mib=_status_kib('VmHWM') / 1024,
        method='VmHWM - VmRSS')


def compile_worker(task: dict) -> dict:
    """``time_option`` for ``compile``, in a process of its own (a failed
    or endless compile cannot take the benchmark with it)."""
    device = task['device']
    data = make_data(task['images'], *task['size'])
    models, _ = build_pair(device, data, task['pass_fraction'])
    return time_option(models, data, 'compile', device, task['warmup'],
                       task['reps'])


def worker_main(task: dict) -> None:
    if task.get('threads'):
        torch.set_num_threads(task['threads'])
    func = dict(memory=memory_worker, compile=compile_worker)[task['kind']]
    print(RESULT + json.dumps(func(task)), flush=True)


# ---------------------------------------------------------------- FLOPs


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


# ---------------------------------------------------------------- profile


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


def profile_table(size: str, images: int, prof: Dict) -> List[str]:
    lines = [
        f'### Profile, {images} x {size}, fp32: one step of each, after the '
        'timed rounds (ms; ". " rows are inside the row above)', '',
        '| phase | part | stock ms | ours ms | ours share of total |',
        '|---|---|---|---|---|'
    ]
    for phase, order in PROFILE_ORDER.items():
        total = prof['ours'][phase]['total']
        for key in order:
            s = prof['stock'][phase].get(key, 0.0)
            o = prof['ours'][phase].get(key, 0.0)
            name = key.replace('  ', '. ', 1) if key.startswith('  ') \
                else key
            lines.append(f'| {phase} | {name} | {s:.1f} | {o:.1f} | '
                         f'{o / total:.1%} |')
    return lines


# ---------------------------------------------------------------- report


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


def machine_info(device: str) -> Dict:
    cpu = cpu_model()
    if cpu == 'unknown CPU':
        cpu = platform.processor() or cpu
    info = dict(
        torch=torch.__version__,
        device=device,
        cpu=cpu,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        dtype='float32 (bf16 rows: bfloat16 autocast)',
        date=time.strftime('%Y-%m-%d %H:%M %Z'),
        # other jobs on the machine move the times; say how loaded it was
        load_average_start=list(os.getloadavg()))
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def speed_table(res: Dict, images: int) -> List[str]:
    lines = [
        f'### Speed ({images} images per step; inference per image; ms, '
        'medians; pair = ours / stock of one interleaved round)', '',
        '| size | option | phase | stock ms | ours ms | ours / stock '
        '(median pair) | pair ratios | fastest ours / fastest stock | '
        'ours / stock fp32 |', '|---|---|---|---|---|---|---|---|---|'
    ]
    for size, by_opt in res.items():
        for option, r in by_opt.items():
            for phase in PHASES:
                s = r[phase]
                if 'error' in s:
                    lines.append(f'| {size} | {option} | {phase} | n/a | n/a'
                                 f' | n/a | n/a: {s["error"]} | n/a | n/a |')
                    continue
                ref = by_opt['fp32'][phase]
                vs = ('n/a' if 'error' in ref else
                      f'{s["ours_median_ms"] / ref["stock_median_ms"]:.3f}')
                pairs = ' '.join(f'{p:.3f}' for p in s['pair_ratios'])
                lines.append(
                    f'| {size} | {option} | {phase} | '
                    f'{s["stock_median_ms"]:.1f} | {s["ours_median_ms"]:.1f}'
                    f' | {s["median_pair_ratio"]:.3f} | {pairs} | '
                    f'{s["fastest_ratio"]:.3f} | {vs} |')
    for size, by_opt in res.items():
        first = (by_opt.get('compile') or {}).get('first_call_s')
        if first:  # the compile time is paid by the first step
            cells = ', '.join(f'{m} {p} {first[m][p]:.1f}' for m in MODEL_NAMES
                              for p in first.get(m, {}))
            lines += [
                '', f'{size} compile: first step of each phase, compiling '
                f'included (s; ours reuses the graphs stock compiled in the '
                f'same process where they are equal): {cells}'
            ]
    return lines


def memory_table(mem: Dict) -> List[str]:
    lines = [
        '### Peak memory, fp32 (MiB above the built model and input; '
        'train: 2 steps, infer: 1 batch; a fresh process each)', '',
        '| size | phase | stock MiB | ours MiB | ours / stock |',
        '|---|---|---|---|---|'
    ]
    for size, by_phase in mem.items():
        for phase, r in by_phase.items():
            s, o = r['stock'], r['ours']
            if 'error' in s or 'error' in o:
                why = s.get('error') or o.get('error')
                lines.append(f'| {size} | {phase} | n/a | n/a | {why} |')
                continue
            lines.append(f'| {size} | {phase} | {s["peak_mib"]:.0f} | '
                         f'{o["peak_mib"]:.0f} | '
                         f'{o["peak_mib"] / s["peak_mib"]:.3f} |')
    return lines


def flops_table(flops: Dict, res: Dict, images: int) -> List[str]:
    lines = [
        '### FLOPs and throughput (GFLOP = 2 x GMAC; train step counted as '
        '3 forwards)', '',
        '| size | GMAC / image (stock, ours) | 3x3 conv GFLOP/s fp32 | '
        'bf16 | forward at conv rate, s / image | infer GFLOP/s stock, '
        'ours | train GFLOP/s stock, ours |', '|---|---|---|---|---|---|---|'
    ]
    for size, f in flops.items():
        fp32 = res.get(size, {}).get('fp32', {})
        gflop = 2 * f['macs_stock'] / 1e9  # per image forward
        cells = []
        for phase, mult in (('infer', 1), ('train', 3 * images)):
            if 'error' in fp32.get(phase, dict(error=None)):
                cells.append('n/a')
                continue
            r = fp32[phase]
            cells.append(', '.join(f'{mult * gflop / (r[k] / 1e3):.0f}'
                                   for k in ('stock_median_ms',
                                             'ours_median_ms')))
        bf16 = f.get('conv_gflops_bf16')
        lines.append(
            f'| {size} | {f["macs_stock"] / 1e9:.1f}, '
            f'{f["macs_ours"] / 1e9:.1f} | {f["conv_gflops_fp32"]:.0f} | '
            f'{"n/a" if bf16 is None else f"{bf16:.0f}"} | '
            f'{gflop / f["conv_gflops_fp32"]:.2f} | {cells[0]} | '
            f'{cells[1]} |')
    return lines


def target_rows(res: Dict) -> List[Dict]:
    rows = []
    for size, by_opt in res.items():
        fp32 = by_opt.get('fp32')
        if not fp32:
            continue
        for phase, target in TARGETS.items():
            if 'error' in fp32[phase]:
                continue
            ratio = fp32[phase]['median_pair_ratio']
            rows.append(
                dict(
                    size=size,
                    phase=phase,
                    target=target,
                    measured=ratio,
                    met=bool(ratio <= target)))
    return rows


def target_table(rows: List[Dict]) -> List[str]:
    lines = [
        '### Targets (issue 14; fp32, median pair ratio ours / stock)', '',
        '| size | target | measured | met |', '|---|---|---|---|'
    ]
    names = dict(train='train step', infer='inference per image')
    for r in rows:
        lines.append(f'| {r["size"]} | {names[r["phase"]]} <= '
                     f'{r["target"]:.2f} | {r["measured"]:.3f} | '
                     f'{"yes" if r["met"] else "no"} |')
    return lines


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--sizes',
        type=parse_size,
        nargs='+',
        default=[(608, 800), (800, 1333)],
        help='HEIGHTxWIDTH of the images (default: 608x800 800x1333)')
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument(
        '--reps', type=int, default=5, help='timed rounds per option')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument(
        '--options',
        nargs='+',
        choices=OPTIONS,
        default=list(OPTIONS),
        help='fp32 is always run (the reference of the targets)')
    parser.add_argument(
        '--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument(
        '--pass-fraction',
        type=float,
        default=1e-3,
        help='share of (anchor, class) scores above the test threshold')
    parser.add_argument(
        '--compile-timeout',
        type=float,
        default=1200,
        help='seconds for the whole torch.compile run of one size')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--profile', action='store_true')
    parser.add_argument('--out', help='directory for e2e_speed.md / .json')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.warmup, args.reps = [(256, 320)], 1, 2
        args.options = ['fp32', 'bf16', 'channels_last']
        # one thread: with other jobs on the cores, OpenMP barriers make
        # two threads many times slower (a smoke run must not stall)
        args.threads = args.threads or 1
    if 'fp32' not in args.options:
        args.options = ['fp32'] + list(args.options)
    if args.reps < 1 or args.images < 1:
        parser.error('--reps and --images must be at least 1')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no GPU visible')
    return args


def measure_size(args, size: Tuple[int, int]) -> Dict:
    """Everything measured at one image size."""
    name = size_name(size)
    data = make_data(args.images, *size)
    models, info = build_pair(args.device, data, args.pass_fraction)
    print(
        f'[{name}] weights: {info["copied_tensors"]} stock tensors copied '
        f'into ours, {info["own_tensors"]} of ours kept; cls bias '
        f'{info["cls_bias"]:.3f} ({args.pass_fraction:.2%} of scores '
        'above the threshold)',
        flush=True)
    out = dict(info=info, speed={}, memory={})
    out['flops'] = dict(
        macs_stock=count_macs(models['stock'], *size, args.device),
        macs_ours=count_macs(models['ours'], *size, args.device),
        conv_gflops_fp32=conv_gflops(args.images, *size, args.device, False))
    if 'bf16' in args.options:
        out['flops']['conv_gflops_bf16'] = conv_gflops(args.images, *size,
                                                       args.device, True)
    for option in args.options:
        start = time.time()
        if option == 'compile':
            task = dict(
                kind='compile',
                size=list(size),
                images=args.images,
                device=args.device,
                warmup=args.warmup,
                reps=args.reps,
                threads=args.threads,
                pass_fraction=args.pass_fraction)
            raw = finish_worker(start_worker(task), args.compile_timeout)
        else:
            raw = time_option(models, data, option, args.device, args.warmup,
                              args.reps)
        if 'error' in raw:  # the whole compile worker failed
            raw = {p: dict(error=raw['error']) for p in PHASES}
        out['speed'][option] = {
            p: raw[p] if 'error' in raw[p] else summarise(raw[p])
            for p in PHASES
        }
        out['speed'][option]['first_call_s'] = raw.get('first_call')
        print(f'[{name}] {option}: {time.time() - start:.0f} s', flush=True)
    if args.profile:
        out['profile'] = {
            k: profile_model(m, data, args.device)
            for k, m in models.items()
        }
    del models
    gc.collect()
    if not args.no_memory:
        tasks = [
            dict(
                kind='memory',
                model=m,
                phase=phase,
                size=list(size),
                images=args.images,
                device=args.device,
                threads=args.threads,
                cls_bias=info['cls_bias']) for phase in PHASES
            for m in MODEL_NAMES
        ]
        # --quick: at the same time (peaks are per process; it is quicker)
        results = iter(run_workers(tasks, args.quick))
        for phase in PHASES:
            out['memory'][phase] = {m: next(results) for m in MODEL_NAMES}
        print(f'[{name}] memory done', flush=True)
    return out


def _load(values: List[float]) -> str:
    return ' '.join(f'{v:.1f}' for v in values)


def report(args, machine: Dict, per_size: Dict) -> Tuple[str, Dict]:
    """The Markdown report and the JSON record."""
    res = {s: r['speed'] for s, r in per_size.items()}
    mem = {s: r['memory'] for s, r in per_size.items() if r['memory']}
    flops = {s: r['flops'] for s, r in per_size.items()}
    targets = target_rows(res)
    lines = [
        '## End-to-end speed: stock mmdet retinanet_r50_fpn_1x_coco vs ours',
        '', f'- machine: {machine["cpu"]}, {machine["cpu_count"]} CPUs; '
        f'device {machine["device"]}'
        f'{", " + machine["gpu"] if "gpu" in machine else ""}; torch '
        f'{machine["torch"]}, {machine["torch_threads"]} threads; '
        f'dtype {machine["dtype"]}; {machine["date"]}; load average '
        f'(1, 5, 15 min) {_load(machine["load_average_start"])} at the start,'
        f' {_load(machine["load_average_end"])} at the end',
        f'- {args.images} images per step, warm-up {args.warmup}, '
        f'{args.reps} timed rounds'
        f'{"; --quick smoke run (not a measurement)" if args.quick else ""}',
        ''
    ]
    lines += speed_table(res, args.images) + ['']
    lines += flops_table(flops, res, args.images) + ['']
    if mem:
        lines += memory_table(mem) + ['']
    lines += target_table(targets) + ['']
    for size, r in per_size.items():
        if 'profile' in r:
            lines += profile_table(size, args.images, r['profile']) + ['']
    record = dict(
        machine=machine,
        args=dict(
            sizes=[size_name(s) for s in args.sizes],
            images=args.images,
            reps=args.reps,
            warmup=args.warmup,
            options=args.options,
            quick=args.quick,
            pass_fraction=args.pass_fraction),
        results=per_size,
        targets=targets)
    return '\n'.join(lines), record


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    machine = machine_info(args.device)
    print(
        f'device {args.device} ({machine["cpu"]}'
        f'{", " + machine["gpu"] if "gpu" in machine else ""}), torch '
        f'{machine["torch"]}, {machine["torch_threads"]} threads, '
        f'options {args.options}',
        flush=True)
    per_size = {}
    for size in args.sizes:
        per_size[size_name(size)] = measure_size(args, size)
    machine['load_average_end'] = list(os.getloadavg())
    text, record = report(args, machine, per_size)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(osp.join(args.out, 'e2e_speed.md'), 'w') as f:
            f.write(text + '\n')
        with open(osp.join(args.out, 'e2e_speed.json'), 'w') as f:
            json.dump(record, f, indent=1)
        print(f'wrote {args.out}/e2e_speed.md and e2e_speed.json')


if __name__ == '__main__':
    main()
