"""Measurements that need a process of their own: peak memory (per
process) and ``torch.compile`` (a failed or endless compile must not take
the benchmark with it). Each runs as ``e2e_speed.py --worker TASK`` and
prints one ``RESULT {json}`` line."""
import gc
import json
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional

import torch

from .models import ROOT, build_model, build_pair, make_data, set_cls_bias
from .timing import Step, time_option

ENTRY = osp.join(ROOT, 'benchmarks', 'e2e_speed.py')
RESULT = 'RESULT '  # prefix of a worker's JSON line on stdout


def start_worker(task: dict) -> subprocess.Popen:
    """Starts ``task`` in a fresh ``python e2e_speed.py --worker`` process."""
    threads = task.get('threads') or torch.get_num_threads()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, ENTRY, '--worker', json.dumps(task)]
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
