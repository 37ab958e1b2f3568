"""The GPU check: everything the CUDA path has to show, in one run.

    python tools/gpu_check/check.py [--budget SECONDS] [--device auto|cuda|cpu]
        [--quick] [--results NAME] [--log-dir DIR]

On a machine without CUDA (``--device auto``, the default) it says so in
one line and exits 0. With a GPU it runs these stages, each in its own
process (a CUDA fault in one cannot poison the next) under its own time
limit, and prints one table, also written to
``benchmarks/results/gpu_check.json``:

1. ``cuda_tests``: the test suite's CUDA-only tests (those marked
   ``skipif(..., reason='needs a CUDA device')``; see ``cuda_only.py``).
2. ``focal_loss``: our ``FocalFamilyLoss`` on CUDA against mmcv's
   ``sigmoid_focal_loss`` op (what mmdet's ``FocalLoss`` calls on CUDA):
   loss value, gradient, forward + backward time and peak memory, for the
   RetinaNet classification loss of 2 and 16 images at 800 x 1333.
3. ``train``: ``--iters`` training steps (default 300, after ``--warmup``)
   of ``configs/retina_r50_fpn_1x.py`` and of mmdet's stock
   ``retinanet_r50_fpn_1x_coco.py``, 2 images per step, in float32 and with
   ``--amp`` (ours: what our ``tools/train.py --amp`` sets; mmdet's: what
   mmdet's ``tools/train.py --amp`` sets): images/s and peak GPU memory.
   The batches are synthetic (random 800 x 1333 and 800 x 1066 images with
   a few boxes, made in the process: the GPU machine cannot fetch data) and
   the backbone starts from random weights (``init_cfg=None``: no
   pretrained download).
4. ``dist_train``: ``tools/dist_train.sh`` with 1 GPU for 20 iterations of
   the same config on a generated shapes dataset (``tools/make_shapes.py``).

A stage that fails, or runs out of its time, is a row of the table; the
run goes on. ``--budget`` is the time left for all stages: a stage gets
its default limit when the time allows, else its share of what is left,
and a training run stops early (saying how many steps it timed) when its
limit comes. ``--device cpu --quick`` runs every stage on the CPU on tiny
sizes: a smoke test of the code paths, not a measurement.
"""
import argparse
import json
import math
import os
import os.path as osp
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

OURS_CONFIG = 'configs/retina_r50_fpn_1x.py'
MMDET_CONFIG = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
NUM_CLASSES = 80
TRAIN_RUNS = (('ours', 'fp32'), ('mmdet', 'fp32'), ('ours', 'amp'), ('mmdet',
                                                                     'amp'))

# Default time limits (seconds) of the stages on an H100, each with room
# for its start-up (imports, model build, CUDA context).
DEFAULT_LIMITS = {
    'cuda_tests': 60.0,
    'focal_loss': 35.0,
    'train': 45.0,  # each of the four runs
    'dist_train': 70.0,
}

# --- shared helpers ----------------------------------------------------------


def one_line(text: str, limit: int = 160) -> str:
    """The last non-empty line of ``text`` (an error's), shortened."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[-1] if lines else ''
    return line if len(line) <= limit else line[:limit - 3] + '...'


def sync(device: str) -> None:
    import torch
    if device == 'cuda':
        torch.cuda.synchronize()


def gpu_info() -> Dict[str, Any]:
    """The GPU and the CUDA stack the figures come from."""
    import torch
    info: Dict[str, Any] = {
        'torch': torch.__version__,
        'torch_cuda': torch.version.cuda,
        'cudnn': torch.backends.cudnn.version(),
        # torch's defaults, which both models train under: TF32 in cuDNN
        # convolutions, not in matmuls
        'tf32': {
            'cudnn': torch.backends.cudnn.allow_tf32,
            'matmul': torch.backends.cuda.matmul.allow_tf32
        },
    }
    try:
        import mmcv
        info['mmcv'] = mmcv.__version__  # built in place: no dist-info
    except ImportError:
        pass
    if torch.cuda.is_available():
        prop = torch.cuda.get_device_properties(0)
        info.update(
            name=prop.name,
            capability='.'.join(map(str, (prop.major, prop.minor))),
            memory_mib=prop.total_memory // 2**20,
            multiprocessors=prop.multi_processor_count)
    return info


# --- stage 2: the focal loss against mmcv's op -------------------------------


def num_anchors(images: int, h: int, w: int) -> int:
    """RetinaNet's anchors (P3-P7, 9 per location) for ``images``."""
    per_image = sum(
        math.ceil(h / s) * math.ceil(w / s) * 9 for s in (8, 16, 32, 64, 128))
    return per_image * images


def reference_focal_loss(device: str) -> Tuple[str, Callable]:
    """The reference: mmcv's CUDA op on CUDA (mmdet's ``FocalLoss`` calls it
    there), mmdet's pure-PyTorch ``py_sigmoid_focal_loss`` elsewhere (mmcv
    has no CPU kernel for it). Both weighted and reduced as mmdet's
    ``FocalLoss`` does: per-anchor weight, sum / avg_factor."""
    if device == 'cuda':
        from mmcv.ops import sigmoid_focal_loss

        def ref(pred, labels, weight, avg_factor):
            loss = sigmoid_focal_loss(pred, labels, 2.0, 0.25, None, 'none')
            return (loss * weight[:, None]).sum() / avg_factor

        return 'mmcv.ops.sigmoid_focal_loss (CUDA)', ref
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss

    def ref_py(pred, labels, weight, avg_factor):
        import torch.nn.functional as F
        onehot = F.one_hot(labels, NUM_CLASSES + 1)[:, :NUM_CLASSES]
        return py_sigmoid_focal_loss(
            pred,
            onehot.type_as(pred),
            weight[:, None],
            gamma=2.0,
            alpha=0.25,
            reduction='mean',
            avg_factor=avg_factor)

    return 'mmdet py_sigmoid_focal_loss', ref_py


def focal_case(images: int, h: int, w: int, device: str, repeats: int,
               deadline: float) -> Dict[str, Any]:
    """Value, gradient, time and peak memory of ours against the reference
    for the classification loss of ``images`` images of h x w."""
    import torch

    from benchmarks.focal_loss import make_inputs
    from projects.focal_retina.losses import FocalFamilyLoss

    n = num_anchors(images, h, w)
    pred, labels, weight, avg = make_inputs(n, device)
    ref_name, ref = reference_focal_loss(device)
    ours_fn = FocalFamilyLoss(gamma=2.0, alpha=0.25)
    impls = {
        'ours': lambda x: ours_fn(x, labels, weight, avg_factor=avg),
        'reference': lambda x: ref(x, labels, weight, avg),
    }
    out: Dict[str, Any] = dict(
        images=images, size=[h, w], anchors=n, reference=ref_name)
    values, grads = {}, {}
    for name, fn in impls.items():
        x = pred.clone().requires_grad_()
        loss = fn(x)
        loss.backward()
        values[name], grads[name] = loss.detach().double(), x.grad
    out['value'] = {k: v.item() for k, v in values.items()}
    out['value_rel_diff'] = abs(
        (values['ours'] - values['reference']) / values['reference']).item()
    scale = grads['reference'].abs().max()
    out['grad_max_rel_diff'] = (
        (grads['ours'] - grads['reference']).abs().max() / scale).item()
    del grads
    for name, fn in impls.items():
        x = pred.clone().requires_grad_()
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            x.grad = None
            sync(device)
            t0 = time.perf_counter()
            fn(x).backward()
            sync(device)
            times.append(time.perf_counter() - t0)
            if time.time() > deadline:
                break
        out.setdefault('ms',
                       {})[name] = 1e3 * statistics.median(times[1:] or times)
        if device == 'cuda':
            x.grad = None
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn(x).backward()
            torch.cuda.synchronize()
            out.setdefault(
                'peak_extra_mib',
                {})[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
    out['time_ratio'] = out['ms']['ours'] / out['ms']['reference']
    return out


def stage_focal_loss(args: argparse.Namespace,
                     deadline: float) -> Dict[str, Any]:
    """Stage 2 (see the module docstring)."""
    cases = []
    for images in args.loss_images:
        if cases and time.time() > deadline - 5:
            break
        cases.append(
            focal_case(images, args.img_size[0], args.img_size[1], args.device,
                       args.repeats, deadline))
    worst = max(
        max(c['value_rel_diff'], c['grad_max_rel_diff']) for c in cases)
    parts = []
    for c in cases:
        part = (f"{c['images']} img: ours {c['ms']['ours']:.2f} ms, ref "
                f"{c['ms']['reference']:.2f} ms ({c['time_ratio']:.2f}x)")
        if 'peak_extra_mib' in c:
            part += (f", peak extra {c['peak_extra_mib']['ours']:.0f} vs "
                     f"{c['peak_extra_mib']['reference']:.0f} MiB")
        parts.append(part)
    # float32 sums over millions of terms in another order: agreement to
    # about 1e-4 is what two correct implementations show
    ok = worst < 1e-3
    summary = (f'vs {cases[0]["reference"]}: max rel diff {worst:.1e} '
               f'(value, grad); ' + '; '.join(parts))
    return dict(ok=ok, summary=summary, cases=cases)


# --- stage 3: training throughput --------------------------------------------


def synthetic_batches(count: int,
                      images: int,
                      h: int,
                      w: int,
                      seed: int = 0) -> List[dict]:
    """Batches as mmdet's data loader hands them to ``train_step``: uint8
    BGR images on the CPU and ``DetDataSample`` with a few boxes each.
    Every other image is 4:3 (800 x 1066 at h, w = 800, 1333), the shape
    of most COCO images after the paper's resize."""
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(seed)
    batches = []
    for b in range(count):
        inputs, samples = [], []
        for i in range(images):
            iw = w if (b + i) % 2 == 0 else int(round(h * 4 / 3))
            iw = min(iw, w)
            inputs.append(
                torch.randint(
                    0, 256, (3, h, iw), generator=g, dtype=torch.uint8))
            k = int(torch.randint(2, 9, (1, ), generator=g))
            wh = torch.rand(k, 2, generator=g) * 0.4 + 0.05
            xy = torch.rand(k, 2, generator=g) * (1 - wh)
            scale = torch.tensor([iw, h, iw, h], dtype=torch.float32)
            boxes = torch.cat([xy, xy + wh], dim=1) * scale
            sample = DetDataSample()
            sample.set_metainfo(
                dict(
                    img_id=b * images + i,
                    img_shape=(h, iw),
                    ori_shape=(h, iw),
                    scale_factor=(1.0, 1.0),
                    flip=False))
            sample.gt_instances = InstanceData(
                bboxes=HorizontalBoxes(boxes),
                labels=torch.randint(0, NUM_CLASSES, (k, ), generator=g))
            samples.append(sample)
        batches.append(dict(inputs=inputs, data_samples=samples))
    return batches


def config_path(impl: str) -> str:
    """Our config, or mmdet's stock one inside the installed package
    (``Config.fromfile`` does not resolve the ``mmdet::`` prefix itself)."""
    if impl == 'ours':
        return osp.join(ROOT, OURS_CONFIG)
    from mmengine.utils import get_installed_path
    return osp.join(
        get_installed_path('mmdet'), '.mim', 'configs',
        MMDET_CONFIG[len('mmdet::'):])


def train_config(impl: str, precision: str, device: str, images: int):
    """The model and optimizer-wrapper configs of one training run.

    The lr is the config's scaled to ``images`` (linear rule, base batch
    16): the run starts from random weights, and the full lr on 2 images
    can diverge, which would time a run of NaNs.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(config_path(impl))
    cfg.model.backbone.init_cfg = None  # no pretrained download there
    wrapper = cfg.optim_wrapper
    wrapper.optimizer.lr = wrapper.optimizer.lr * images / 16
    if precision == 'amp':
        if impl == 'ours':
            from projects.focal_retina.engine.cli import enable_amp
            enable_amp(cfg, device)  # what our tools/train.py --amp does
        elif device == 'cuda':
            # mmdet 3.3's tools/train.py --amp, verbatim in effect
            wrapper.type = 'AmpOptimWrapper'
            wrapper.loss_scale = 'dynamic'
        else:
            raise ValueError("mmdet's --amp (AmpOptimWrapper) needs a GPU")
    return cfg.model, cfg.optim_wrapper


def train_run(impl: str, precision: str, args: argparse.Namespace,
              deadline: float) -> Dict[str, Any]:
    """``args.warmup`` + ``args.iters`` training steps of one model; the
    timed steps stop early at ``deadline``."""
    import torch
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import projects.focal_retina  # noqa: F401  (our registered modules)

    init_default_scope('mmdet')
    device = args.device
    model_cfg, wrapper_cfg = train_config(impl, precision, device,
                                          args.images_per_gpu)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.to(device).train()
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    batches = synthetic_batches(4, args.images_per_gpu, *args.img_size)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    timed, t0, losses = 0, None, []
    total = args.warmup + args.iters
    for i in range(total):
        if i == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        log_vars = model.train_step(batches[i % len(batches)], wrapper)
        if i == 0 or i == total - 1:
            losses.append(float(log_vars['loss'].detach()))
        if t0 is not None:
            timed += 1
        if time.time() > deadline:
            if t0 is not None and i < total - 1:
                losses.append(float(log_vars['loss'].detach()))
            break
    sync(device)
    seconds = time.perf_counter() - t0 if t0 is not None else float('nan')
    out: Dict[str, Any] = dict(
        impl=impl,
        precision=precision,
        config=OURS_CONFIG if impl == 'ours' else MMDET_CONFIG,
        optim_wrapper=wrapper_cfg.get('type', 'OptimWrapper'),
        images_per_step=args.images_per_gpu,
        size=list(args.img_size),
        warmup=args.warmup,
        timed_steps=timed,
        requested_steps=args.iters,
        seconds=seconds,
        images_per_s=(timed * args.images_per_gpu /
                      seconds if timed else float('nan')),
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None)
    if device == 'cuda':
        out['peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
        out['peak_reserved_mib'] = torch.cuda.max_memory_reserved() / 2**20
    return out


def stage_train(args: argparse.Namespace, impl: str, precision: str,
                deadline: float) -> Dict[str, Any]:
    """Stage 3, one of the four runs."""
    if impl == 'mmdet' and precision == 'amp' and args.device != 'cuda':
        return dict(
            ok=True,
            skipped=True,
            summary="not run: mmdet's --amp (AmpOptimWrapper) needs a GPU")
    run = train_run(impl, precision, args, deadline)
    finite = all(
        v is not None and math.isfinite(v)
        for v in (run['loss_first'], run['loss_last']))
    ok = finite and run['timed_steps'] > 0
    memory = (f", peak {run['peak_mib']:.0f} MiB" if 'peak_mib' in run else '')
    cut = ('' if run['timed_steps'] >= args.iters else
           f' (of {args.iters}: time limit)')
    summary = (f"{run['timed_steps']} steps{cut}, "
               f"{run['images_per_s']:.2f} img/s{memory}, loss "
               f"{run['loss_first']:.3g} -> {run['loss_last']:.3g} "
               f"[{run['optim_wrapper']}]")
    return dict(ok=ok, summary=summary, **run)


# --- stage 1: the CUDA tests -------------------------------------------------

_CUDA_REASON = re.compile(r'''reason\s*=\s*['"][^'"]*CUDA''', re.IGNORECASE)


def cuda_test_files(tests_dir: str) -> List[str]:
    """Test files holding a CUDA-only mark (collecting only these is much
    faster than collecting the suite; ``cuda_only.py`` then selects the
    marked tests in them)."""
    found = []
    for dirpath, _, files in os.walk(tests_dir):
        for name in sorted(files):
            if name.startswith('test_') and name.endswith('.py'):
                path = osp.join(dirpath, name)
                with open(path) as f:
                    if _CUDA_REASON.search(f.read()):
                        found.append(osp.relpath(path, ROOT))
    return sorted(found)


def stage_cuda_tests(args: argparse.Namespace, timeout: float,
                     log: str) -> Dict[str, Any]:
    """Stage 1: pytest on the CUDA-only tests, in a subprocess."""
    import xml.etree.ElementTree as ET

    files = args.tests or cuda_test_files(osp.join(ROOT, 'tests'))
    if not files:
        return dict(ok=False, summary='no CUDA-only tests found')
    xml = log + '.xml'
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [HERE, ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    cmd = [
        sys.executable, '-m', 'pytest', '-p', 'cuda_only', '-q', '-rfE', '-o',
        'addopts=', f'--junitxml={xml}', *files
    ]
    rc, seconds, tail = run_logged(cmd, env, timeout, log)
    if rc is None:
        return dict(
            ok=False, summary=f'timeout after {timeout:.0f} s', files=files)
    try:
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == 'testsuite' else suite[0]
        counts = {
            k: int(suite.get(k, 0))
            for k in ('tests', 'failures', 'errors', 'skipped')
        }
        counts['skipped_tests'] = counts.pop('skipped')
        failed = [
            f"{c.get('classname')}.{c.get('name')}"
            for c in suite.iter('testcase')
            if c.find('failure') is not None or c.find('error') is not None
        ]
    except (OSError, ET.ParseError, IndexError):
        return dict(ok=False, summary=f'pytest rc {rc}: {one_line(tail)}')
    passed = counts['tests'] - counts['failures'] - counts['errors'] - \
        counts['skipped_tests']
    summary = (f"{passed} passed, {counts['failures'] + counts['errors']} "
               f"failed, {counts['skipped_tests']} skipped ({len(files)} "
               'files)')
    if failed:
        summary += '; failed: ' + ', '.join(failed[:4])
    # rc 5 = nothing collected; without CUDA everything selected is skipped
    ok = rc == 0 and (passed > 0 or args.device != 'cuda')
    return dict(
        ok=ok,
        skipped=ok and passed == 0,
        summary=summary,
        files=files,
        failed=failed,
        **counts)


# --- stage 4: tools/dist_train.sh --------------------------------------------

DIST_CONFIG = '''# tools/gpu_check/check.py: {base} on generated shapes
_base_ = {base!r}
model = dict(backbone=dict(init_cfg=None))  # nothing can be fetched there
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale={scale!r}, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    batch_size={images},
    num_workers=2,
    persistent_workers=False,
    dataset=dict(
        type='SyntheticShapesDataset',
        data_root={data!r},
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
train_cfg = dict(max_iters={iters}, val_interval={iters})
val_cfg = None
val_dataloader = None
val_evaluator = None
default_hooks = dict(
    logger=dict(interval={log_interval}),
    checkpoint=dict(interval={never}, save_last=False))
'''

_ITER = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')
_TIME = re.compile(r'\stime:\s*([0-9.]+)')
_MEMORY = re.compile(r'\smemory:\s*(\d+)')


def logged_iters(text: str) -> List[Dict[str, float]]:
    """mmengine's training log lines: iteration, s/iter, memory (MiB)."""
    found = []
    for line in text.splitlines():
        m = _ITER.search(line)
        if not m:
            continue
        entry = dict(iter=int(m.group(1)))
        for key, pattern in (('time', _TIME), ('memory', _MEMORY)):
            v = pattern.search(line)
            if v:
                entry[key] = float(v.group(1))
        found.append(entry)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def stage_dist_train(args: argparse.Namespace, timeout: float,
                     log: str) -> Dict[str, Any]:
    """Stage 4: ``bash tools/dist_train.sh CONFIG 1`` on generated data."""
    start = time.time()
    work = tempfile.mkdtemp(prefix='gpu_check_dist_')
    try:
        data = osp.join(work, 'shapes')
        # a small folder of images the data pipeline resizes to the
        # config's scale, as it would COCO's
        rc, _, tail = run_logged([
            sys.executable,
            osp.join(ROOT, 'tools', 'make_shapes.py'), '--out', data,
            '--num-train', '8', '--num-val', '2', '--img-size', '320'
        ], dict(os.environ), 60, log + '.make_shapes')
        if rc != 0:
            return dict(
                ok=False, summary='make_shapes.py failed: ' + one_line(tail))
        config = osp.join(work, 'retina_r50_fpn_1x_dist_check.py')
        with open(config, 'w') as f:
            f.write(
                DIST_CONFIG.format(
                    base=osp.join(ROOT, OURS_CONFIG),
                    scale=(args.img_size[1], args.img_size[0]),
                    images=args.images_per_gpu,
                    data=data,
                    iters=args.dist_iters,
                    log_interval=max(1, args.dist_iters // 4),
                    never=10 * args.dist_iters + 1))
        env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
        for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                    'MASTER_PORT'):
            env.pop(key, None)
        if args.device == 'cpu':
            env['CUDA_VISIBLE_DEVICES'] = ''  # mmengine's way to use the CPU
        cmd = [
            'bash',
            osp.join(ROOT, 'tools', 'dist_train.sh'), config, '1',
            '--work-dir',
            osp.join(work, 'run')
        ]
        left = timeout - (time.time() - start)
        rc, seconds, tail = run_logged(cmd, env, left, log)
        with open(log) as f:
            logged = logged_iters(f.read())
        last = logged[-1] if logged else {}
        done = int(last.get('iter', 0))
        out: Dict[str, Any] = dict(
            iters=done, requested_iters=args.dist_iters, seconds=seconds)
        if 'time' in last:
            out['last_iter_time_s'] = last['time']
        if 'memory' in last:
            out['memory_mib'] = last['memory']
        if rc is None:
            return dict(
                ok=False,
                summary=f'timeout after {left:.0f} s at iter {done}',
                **out)
        ok = rc == 0 and done == args.dist_iters
        summary = (f'rc {rc}, {done}/{args.dist_iters} iters in '
                   f'{seconds:.0f} s')
        if 'time' in last:
            summary += f", last logged {last['time']:.3f} s/iter"
        if 'memory' in last:
            summary += f", memory {last['memory']:.0f} MiB"
        if not ok:
            summary += ': ' + one_line(tail)
        return dict(ok=ok, summary=summary, **out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the orchestration -------------------------------------------------------


def run_logged(cmd: Sequence[str], env: Dict[str, str], timeout: float,
               log: str) -> Tuple[Optional[int], float, str]:
    """Runs ``cmd`` with its output in ``log``.

    Returns:
        (return code, or None on timeout; seconds; the output's last 2000
        characters).
    """
    start = time.time()
    with open(log, 'w') as f:
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True)  # its children go with it
            rc: Optional[int] = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = None
    with open(log) as f:
        tail = f.read()[-2000:]
    return rc, time.time() - start, tail


def stage_plan(args: argparse.Namespace) -> List[str]:
    """The stages, in the order they run."""
    names = []
    for stage in args.stages:
        if stage == 'train':
            names += [f'train:{i}:{p}' for i, p in TRAIN_RUNS]
        else:
            names.append(stage)
    return names


def default_limit(name: str, device: str) -> float:
    """A stage's default time limit; on the CPU (a smoke run) 4 times the
    GPU's."""
    return DEFAULT_LIMITS[name.split(':')[0]] * (4 if device == 'cpu' else 1)


def child_stage(args: argparse.Namespace) -> None:
    """Runs one in-process stage and writes its record to --child-out."""
    deadline = args.child_deadline
    try:
        if args.child == 'focal_loss':
            record = stage_focal_loss(args, deadline)
        else:
            _, impl, precision = args.child.split(':')
            record = stage_train(args, impl, precision, deadline)
    except Exception as exc:  # a failing stage is a row, not the end
        import traceback
        traceback.print_exc()
        record = dict(
            ok=False, summary=f'{type(exc).__name__}: {one_line(str(exc))}')
    with open(args.child_out, 'w') as f:
        json.dump(record, f, allow_nan=True)


def run_stage(name: str, args: argparse.Namespace, timeout: float,
              log_dir: str) -> Dict[str, Any]:
    """One stage, in its own process, within ``timeout`` seconds."""
    log = osp.join(log_dir, name.replace(':', '_') + '.log')
    if name == 'cuda_tests':
        return stage_cuda_tests(args, timeout, log)
    if name == 'dist_train':
        return stage_dist_train(args, timeout, log)
    out = log[:-len('.log')] + '.json'
    # the child stops its timed loop 6 s before its limit: time to finish
    # the step in flight and write its record
    deadline = time.time() + timeout - 6
    cmd = [
        sys.executable,
        osp.abspath(__file__), '--child', name, '--child-out', out,
        '--child-deadline', f'{deadline:.1f}'
    ] + forwarded_options(args)
    rc, _, tail = run_logged(cmd, dict(os.environ), timeout, log)
    if rc is None:
        return dict(ok=False, summary=f'timeout after {timeout:.0f} s')
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        return dict(ok=False, summary=f'exit {rc}: {one_line(tail)}')


def forwarded_options(args: argparse.Namespace) -> List[str]:
    """The options a child process needs to run its stage alike."""
    return [
        '--device', args.device, '--img-size', *map(str, args.img_size),
        '--images-per-gpu',
        str(args.images_per_gpu), '--iters',
        str(args.iters), '--warmup',
        str(args.warmup), '--loss-images', *map(str, args.loss_images),
        '--repeats',
        str(args.repeats)
    ]


def run_all(args: argparse.Namespace) -> Dict[str, Any]:
    """Every stage within ``args.budget`` seconds; the records by name."""
    start = time.time()
    log_dir = args.log_dir or tempfile.mkdtemp(prefix='gpu_check_logs_')
    os.makedirs(log_dir, exist_ok=True)
    names = stage_plan(args)
    records: Dict[str, Any] = {}
    for i, name in enumerate(names):
        left = args.budget - (time.time() - start)
        wanted = sum(default_limit(n, args.device) for n in names[i:])
        # the default limit when the budget allows, else a fair share
        timeout = default_limit(name, args.device) * min(1.0, left / wanted)
        if timeout < 15:
            records[name] = dict(
                ok=False,
                not_run=True,
                summary='not run: the time budget is spent',
                seconds_wall=0.0)
            print(f'[gpu_check] {name}: skipped (budget)', flush=True)
            continue
        print(f'[gpu_check] {name}: limit {timeout:.0f} s ...', flush=True)
        t0 = time.time()
        try:
            record = run_stage(name, args, timeout, log_dir)
        except Exception as exc:  # never let one stage end the check
            record = dict(
                ok=False,
                summary=f'{type(exc).__name__}: {one_line(str(exc))}')
        record['seconds_wall'] = time.time() - t0
        records[name] = record
        print(
            f"[gpu_check] {name}: {'ok' if record['ok'] else 'FAILED'} "
            f"({record['seconds_wall']:.0f} s): {record['summary']}",
            flush=True)
    return dict(stages=records, log_dir=log_dir, seconds=time.time() - start)


def setup_rows() -> List[Tuple[str, str, str, str]]:
    """Rows for the set-up steps that tools/gpu_check/run.sh reports in
    GPU_CHECK_SETUP (``name=status=seconds=text;...``)."""
    rows = []
    for item in filter(None, os.environ.get('GPU_CHECK_SETUP', '').split(';')):
        parts = (item.split('=', 3) + ['', '', ''])[:4]
        rows.append(tuple(parts))
    return rows


def build_table(result: Dict[str, Any]) -> str:
    from benchmarks import results_io
    rows = [(name, status, seconds, text)
            for name, status, seconds, text in setup_rows()]
    for name, rec in result['stages'].items():
        status = 'ok' if rec['ok'] else 'FAILED'
        if rec.get('not_run'):
            status = 'not run'
        elif rec.get('skipped'):
            status = 'skipped'
        rows.append((name, status, f"{rec.get('seconds_wall', 0.0):.0f}",
                     rec['summary']))
    return results_io.markdown_table(('stage', 'status', 's', 'result'), rows)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0].strip())
    parser.add_argument(
        '--device',
        choices=['auto', 'cuda', 'cpu'],
        default='auto',
        help='auto: cuda if available, else say so and exit 0; cpu: a '
        'smoke run of the code paths (use with --quick)')
    parser.add_argument(
        '--budget',
        type=float,
        help='seconds for all stages together (default: the sum of their '
        'default limits)')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='tiny sizes: 128 x 160 images, 2 steps, 1 warm-up, loss of 1 '
        'image, 2 dist_train iterations')
    parser.add_argument(
        '--stages',
        nargs='+',
        default=['cuda_tests', 'focal_loss', 'train', 'dist_train'],
        choices=['cuda_tests', 'focal_loss', 'train', 'dist_train'])
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--images-per-gpu', type=int, default=2)
    parser.add_argument('--iters', type=int, help='timed steps (300)')
    parser.add_argument('--warmup', type=int, help='untimed steps (20)')
    parser.add_argument('--loss-images', type=int, nargs='+')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--dist-iters', type=int)
    parser.add_argument(
        '--tests',
        nargs='+',
        help='test files for cuda_tests (default: every file with a '
        'CUDA-only mark)')
    parser.add_argument(
        '--results',
        metavar='NAME',
        help='write benchmarks/results/NAME.json (default on CUDA: '
        'gpu_check; on the CPU: none)')
    parser.add_argument(
        '--log-dir', help='keep the stage logs here (default: a temp dir)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--child-out', help=argparse.SUPPRESS)
    parser.add_argument('--child-deadline', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = dict(
        img_size=[128, 160], iters=2, warmup=1, loss_images=[1], dist_iters=2)
    full = dict(
        img_size=[800, 1333],
        iters=300,
        warmup=20,
        loss_images=[2, 16],
        dist_iters=20)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def default_budget(args: argparse.Namespace) -> float:
    """All stages at their default limits."""
    return sum(default_limit(n, args.device) for n in stage_plan(args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    if args.child:
        child_stage(args)
        return 0
    if args.device == 'auto':
        if not torch.cuda.is_available():
            print(f'gpu_check: no CUDA device (torch {torch.__version__}, '
                  f'CUDA build: {torch.version.cuda or "none"}): nothing to '
                  'check here; run tools/gpu_check/run.sh on a GPU machine')
            return 0
        args.device = 'cuda'
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: --device cuda but torch sees no CUDA device')
        return 2
    if args.results is None and args.device == 'cuda':
        args.results = 'gpu_check'
    if args.budget is None:
        args.budget = default_budget(args)
    from benchmarks import results_io
    results_io.mark_start()
    info = gpu_info()
    print(f'[gpu_check] {json.dumps(info)}', flush=True)
    result = run_all(args)
    table = build_table(result)
    print(table)
    if args.results:
        data = dict(
            device=args.device,
            gpu=info,
            setup=[
                dict(zip(('step', 'status', 'seconds', 'text'), row))
                for row in setup_rows()
            ],
            options=dict(
                img_size=args.img_size,
                images_per_gpu=args.images_per_gpu,
                iters=args.iters,
                warmup=args.warmup,
                loss_images=args.loss_images,
                dist_iters=args.dist_iters,
                budget=args.budget),
            stages=result['stages'],
            seconds=result['seconds'],
            table=table)
        path = results_io.write_results(args.results, data, sys.argv)
        print(f'[gpu_check] results written to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
