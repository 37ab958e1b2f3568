"""Reading mmengine's logs from work dirs (shared by analyze_logs.py and
collect_results.py).

A training run writes ``WORK/<timestamp>/vis_data/scalars.json``: one JSON
object per line, training lines with ``iter``/``step`` and the losses, lr,
time; validation lines with ``coco/...`` metrics and ``step``. mmengine's
LoggerHook logs validation metrics with ``step = epoch`` unless
``log_metric_by_epoch=False``, which for an iteration-based loop is 0: the
iteration of a validation is therefore taken as the last training iteration
logged before it (or its ``step`` when that is larger). A test run
(tools/test.py) writes its metrics as one JSON object to
``WORK/<timestamp>/<timestamp>.json``.
"""
import glob
import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

Series = Dict[str, Dict[int, float]]  # key -> {iteration: value}


def scalar_files(path: str) -> List[str]:
    """The scalars.json files of a work dir in time order, or [path] for
    a JSON log file."""
    if osp.isfile(path):
        return [path]
    found = glob.glob(
        osp.join(path, '**', 'vis_data', 'scalars.json'), recursive=True)
    # <work>/<YYYYmmdd_HHMMSS>/vis_data/scalars.json: the name sorts by time
    return sorted(
        found, key=lambda p: osp.basename(osp.dirname(osp.dirname(p))))


def read_lines(path: str) -> List[dict]:
    """JSON objects of a JSON-lines file, skipping blank or torn lines (a
    run killed while writing)."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def load_series(path: str) -> Series:
    """{key: {iteration: value}} of a work dir (all its runs; a resumed run
    overrides the iterations it repeats) or of one JSON log file."""
    series: Series = defaultdict(dict)
    for file in scalar_files(path):
        last_iter = 0
        for log in read_lines(file):
            train = 'iter' in log
            if train:
                last_iter = int(log['iter'])
                x = last_iter
            else:  # a validation line
                x = max(int(log.get('step', 0)), last_iter)
            for key, value in log.items():
                if key in ('iter', 'step',
                           'epoch') or not isinstance(value, (int, float)):
                    continue
                if train or '/' in key:  # not the validation's own time
                    series[key][x] = float(value)
    return dict(series)


def test_metrics(work_dir: str) -> List[Tuple[str, dict]]:
    """(timestamp, metrics) of the tools/test.py runs of a work dir, oldest
    first."""
    runs = []
    for path in glob.glob(osp.join(work_dir, '*', '*.json')):
        stamp = osp.basename(osp.dirname(path))
        if osp.splitext(osp.basename(path))[0] != stamp:
            continue
        try:
            with open(path) as f:
                metrics = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(metrics, dict):
            runs.append((stamp, metrics))
    return sorted(runs, key=lambda r: r[0])


def latest_metric(work_dir: str, metric: str) -> Optional[Tuple[float, str]]:
    """The newest value of ``metric`` in a work dir and where it came from:
    a tools/test.py run (preferred) or the last validation of training."""
    for stamp, metrics in reversed(test_metrics(work_dir)):
        if metric in metrics:
            return float(metrics[metric]), f'test run {stamp}'
    values = load_series(work_dir).get(metric)
    if values:
        it = max(values)
        return values[it], f'validation at iter {it}'
    return None
