"""Results files: every measured figure the docs quote lives in one.

A measuring command (a benchmark, ``tools/summarize_run.py``, an analysis
tool that draws a figure) writes its numbers with :func:`write_results` to
``benchmarks/results/<name>.json``::

    {"meta": {"date": ..., "cpu": ..., "cpu_flags": {...}, "threads": {...},
              "load_average": {"before": [...], "after": [...]},
              "versions": {...}, "command": "..."},
     ...the command's own data...}

A page quotes a figure followed immediately by a marker naming the file and
a dotted key into it (list indices as numbers, ``*100`` for a percent)::

    the focal loss takes 72.4 ms <!-- result: focal_loss.json#ours.ms -->

and embeds a stored Markdown table (a string in the JSON) between::

    <!-- begin result: focal_loss.json#table -->
    ...the string, verbatim...
    <!-- end result -->

or checks a table's rows against the entries of a dict in the file with
``<!-- result rows: FILE.json#key; COLUMN=field; ... -->`` above it. A
paper figure that reads like a measurement carries ``<!-- paper -->``, a
chosen value (a target, a budget) ``<!-- setting -->``.
``tests/test_docs_figures.py`` checks the markers against the files and
finds measured-looking figures without one. ``python
benchmarks/results_io.py embed PAGE ...`` refills the blocks after a
re-measurement; ``show NAME [KEY]`` prints a file or a value.

This module imports no torch: it reads versions through
``importlib.metadata`` and asks torch for its thread count only where the
caller has imported torch already.
"""
import datetime
import importlib.metadata
import json
import math
import os
import os.path as osp
import platform
import re
import shlex
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

# FOCAL_RETINA_RESULTS_DIR sends the files elsewhere (tests, or a run that
# must not replace the ones the docs quote).
RESULTS_DIR = os.environ.get('FOCAL_RETINA_RESULTS_DIR') or osp.join(
    osp.dirname(osp.abspath(__file__)), 'results')

# Packages whose versions a figure depends on; absent ones are left out.
VERSIONED = ('torch', 'mmdet', 'mmcv', 'mmengine', 'onnxruntime', 'onnx',
             'numpy', 'pycocotools')

# /proc/cpuinfo flags that decide which bf16/int8 kernels oneDNN can use, so
# two CPUs' timings are comparable only where these agree.
CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_bf16',
             'amx_tile', 'amx_int8')

_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


def _load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        return None


# The load when the measuring command started (it imports this module at
# start-up); mark_start() takes it again right before the timed part.
_LOAD_BEFORE = _load_average()


def mark_start() -> Optional[List[float]]:
    """Take the 'before' load average now (call it before timing).

    Returns:
        The 1, 5 and 15 minute load averages, or None where unknown.
    """
    global _LOAD_BEFORE
    _LOAD_BEFORE = _load_average()
    return _LOAD_BEFORE


def cpu_flags() -> Dict[str, bool]:
    """Which of :data:`CPU_FLAGS` the CPU reports (empty off Linux)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    have = set(line.split(':', 1)[1].split())
                    return {flag: flag in have for flag in CPU_FLAGS}
    except OSError:
        pass
    return {}


def _cpu_model() -> str:
    # benchmarks/ is no package; load machine.py by path or by either name.
    try:
        from benchmarks.machine import cpu_model
    except ImportError:
        sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
        from machine import cpu_model  # type: ignore
    return cpu_model()


def versions() -> Dict[str, str]:
    """Python's and the installed :data:`VERSIONED` packages' versions."""
    found = {'python': platform.python_version()}
    for package in VERSIONED:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def threads() -> Dict[str, Any]:
    """torch's intra-op threads (if torch is loaded) and OMP_NUM_THREADS."""
    info: Dict[str, Any] = {
        'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS'),
        'cpu_count': os.cpu_count(),
    }
    torch = sys.modules.get('torch')
    if torch is not None and hasattr(torch, 'get_num_threads'):
        info['torch'] = torch.get_num_threads()
    return info


def meta(argv: Sequence[str],
         load_before: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """The ``meta`` block of a results file, taken now.

    Args:
        argv: The measuring command's command line (``sys.argv``).
        load_before: The load averages at the start of the measurement
            when another process took them (default: :func:`mark_start`
            or this module's import).

    Returns:
        Date (UTC, ISO 8601), CPU model and flags, threads, load averages
        before (:func:`mark_start` or import time) and now, versions and the
        command line.
    """
    return {
        'date':
        datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'cpu':
        _cpu_model(),
        'cpu_flags':
        cpu_flags(),
        'threads':
        threads(),
        'load_average': {
            'before':
            (list(load_before) if load_before is not None else _LOAD_BEFORE),
            'after':
            _load_average()
        },
        'versions':
        versions(),
        'command':
        ' '.join(shlex.quote(a) for a in argv),
    }


def results_path(name: str, results_dir: Optional[str] = None) -> str:
    """``<results_dir>/<name>.json`` after checking ``name``.

    Raises:
        ValueError: ``name`` is not a plain file name.
    """
    if name.endswith('.json'):
        name = name[:-len('.json')]
    if not _NAME.match(name):
        raise ValueError(f'results name {name!r}: expected letters, digits, '
                         "'_', '.', '-' (a file name under "
                         'benchmarks/results/, no directories)')
    return osp.join(results_dir or RESULTS_DIR, name + '.json')


def _finite(value: Any) -> Any:
    """NaN / inf as None (JSON has no NaN), tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_results(name: str,
                  data: Dict[str, Any],
                  argv: Sequence[str],
                  results_dir: Optional[str] = None,
                  load_before: Optional[Sequence[float]] = None) -> str:
    """Write ``data`` with a fresh ``meta`` block to ``<name>.json``.

    Args:
        name: File name under ``benchmarks/results/`` (``.json`` optional).
        data: The command's figures; JSON-serialisable; no ``meta`` key.
        argv: The command line that measured them (``sys.argv``).
        results_dir: Another directory (tests).
        load_before: See :func:`meta`.

    Returns:
        The path written.
    """
    if 'meta' in data:
        raise ValueError("write_results: data has a 'meta' key; the meta "
                         'block is written by results_io')
    path = results_path(name, results_dir)
    record = _finite({'meta': meta(argv, load_before), **data})
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(record, f, indent=1, allow_nan=False)
        f.write('\n')
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def read_results(name: str,
                 results_dir: Optional[str] = None) -> Dict[str, Any]:
    """The record of ``<name>.json`` (``meta`` included)."""
    with open(results_path(name, results_dir)) as f:
        return json.load(f)


def lookup(record: Any, key: str) -> Any:
    """The value at a dotted ``key`` (list indices as numbers).

    A dict key that holds dots itself (``'configs/x.py@128'``) is matched
    whole: the longest run of parts that is a key wins.

    Raises:
        KeyError: A part of ``key`` is not in ``record``.
    """
    value, parts = record, key.split('.') if key else []
    while parts:
        if isinstance(value, list):
            part = parts.pop(0)
            if not part.isdigit() or int(part) >= len(value):
                raise KeyError(f'{key}: no index {part!r} in a list of '
                               f'{len(value)}')
            value = value[int(part)]
            continue
        for n in range(len(parts), 0, -1):
            part = '.'.join(parts[:n])
            if isinstance(value, dict) and part in value:
                value, parts = value[part], parts[n:]
                break
        else:
            raise KeyError(f'{key}: no {parts[0]!r}')
    return value


def add_argument(parser, flag: str = '--results') -> None:
    """The measuring commands' option that names their results file."""
    parser.add_argument(
        flag,
        metavar='NAME',
        help='also write the figures, with date, CPU, threads, load and '
        'versions, to benchmarks/results/NAME.json (the file the docs '
        'quote; tests/test_docs_figures.py checks the pages against it)')


def fmt(value: float, decimals: int) -> str:
    """``value`` as a page writes it with ``decimals`` decimals."""
    return f'{value:.{decimals}f}'


def marker(name: str, key: str, percent: bool = False) -> str:
    """The page marker that quotes ``<name>.json#key``."""
    name = name if name.endswith('.json') else name + '.json'
    return f'<!-- result: {name}#{key}{"*100" if percent else ""} -->'


def quote(record: Dict[str, Any],
          name: str,
          key: str,
          decimals: int,
          percent: bool = False) -> str:
    """A figure and its marker, ready to paste into a page."""
    value = lookup(record, key) * (100 if percent else 1)
    return f'{fmt(value, decimals)} {marker(name, key, percent)}'


def describe(meta_block: Dict[str, Any]) -> str:
    """One line on where and how a file's figures were measured.

    For pages that say why two figures differ (threads, load).
    """
    t = meta_block.get('threads', {})
    load = meta_block.get('load_average', {})

    def _load(x: Optional[List[float]]) -> str:
        return '/'.join(f'{v:.2f}' for v in x) if x else 'unknown'

    torch_threads = t.get('torch')
    return (f'{meta_block.get("date", "?")[:10]}, {meta_block.get("cpu")}'
            f' ({t.get("cpu_count")} CPUs), torch threads '
            f'{torch_threads if torch_threads is not None else "n/a"}, '
            f'OMP_NUM_THREADS={t.get("OMP_NUM_THREADS")}, load average '
            f'{_load(load.get("before"))} before, '
            f'{_load(load.get("after"))} after')


def markdown_table(header: Sequence[str],
                   rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table (no trailing newline), for storing in JSON."""

    def line(cells: Sequence[Any]) -> str:
        return '| ' + ' | '.join(str(c) for c in cells) + ' |'

    out = [line(header), line(['---'] * len(header))]
    out += [line(r) for r in rows]
    return '\n'.join(out)


def load_ok(meta_block: Dict[str, Any],
            threshold: float = 0.5) -> Tuple[bool, float]:
    """Whether the CPU was about idle (1-min load per CPU <= threshold).

    Returns:
        (idle, the larger of the before/after 1-minute loads per CPU).
    """
    load = meta_block.get('load_average', {})
    cpus = meta_block.get('threads', {}).get('cpu_count') or 1
    ones = [x[0] for x in (load.get('before'), load.get('after')) if x]
    worst = max(ones) / cpus if ones else float('nan')
    return worst <= threshold, worst


BEGIN_BLOCK = re.compile(r'^\s*<!--\s*begin result:\s*(?P<file>[^#\s]+)#'
                         r'(?P<key>[^>]+?)\s*-->\s*$')
END_BLOCK = re.compile(r'^\s*<!--\s*end result\s*-->\s*$')


def embed(text: str,
          results_dir: Optional[str] = None,
          skipped: Optional[List[str]] = None) -> str:
    """``text`` with every ``begin result`` block refilled from its file.

    A block that is one code fence keeps its fence and gets the stored
    string inside it. Inline ``<!-- result: -->`` figures are left alone:
    the sentence around a number may need rewording when it changes. A
    block whose file or key is missing is left as it is and named in
    ``skipped``.
    """
    lines, out, i = text.split('\n'), [], 0
    while i < len(lines):
        out.append(lines[i])
        m = BEGIN_BLOCK.match(lines[i])
        i += 1
        if not m:
            continue
        end = i
        while end < len(lines) and not END_BLOCK.match(lines[end]):
            end += 1
        if end == len(lines):
            raise ValueError(f'line {i}: result block never ended')
        body = lines[i:end]
        try:
            stored = lookup(
                read_results(m.group('file'), results_dir), m.group('key'))
        except (OSError, KeyError) as e:
            if skipped is not None:
                skipped.append(f'line {i}: {e}')
            out += body
            i = end
            continue
        if not isinstance(stored, str):
            raise ValueError(f'line {i}: {m.group("file")}#{m.group("key")}'
                             ' is not a string')
        fenced = len(body) >= 2 and body[0].lstrip().startswith('```') \
            and body[-1].strip() == '```'
        new = stored.strip('\n').split('\n')
        out += [body[0], *new, body[-1]] if fenced else new
        i = end
    return '\n'.join(out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python benchmarks/results_io.py embed PAGE ...``: refill blocks;
    ``python benchmarks/results_io.py show NAME [KEY]``: print a value."""
    import argparse
    parser = argparse.ArgumentParser(description=main.__doc__)
    sub = parser.add_subparsers(dest='cmd', required=True)
    p_embed = sub.add_parser('embed', help='refill the result blocks')
    p_embed.add_argument('pages', nargs='+')
    p_show = sub.add_parser('show', help='print a file, or one key of it')
    p_show.add_argument('name')
    p_show.add_argument('key', nargs='?', default='')
    args = parser.parse_args(argv)
    if args.cmd == 'show':
        value = lookup(read_results(args.name), args.key)
        print(value if isinstance(value, str) else json.dumps(value, indent=1))
        return
    skipped: List[str] = []
    for page in args.pages:
        with open(page, encoding='utf-8') as f:
            text = f.read()
        new = embed(text, skipped=skipped)
        for why in skipped:
            print(f'{page}: {why}: left as it was', file=sys.stderr)
        skipped.clear()
        if new != text:
            with open(page, 'w', encoding='utf-8') as f:
                f.write(new)
            print(f'{page}: result blocks refilled')


if __name__ == '__main__':
    main()
