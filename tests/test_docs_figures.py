"""Every measured figure in the docs comes from a results file.

A page quotes a measured number followed by a marker naming the results
file (under ``benchmarks/results/``, written by the measuring command
through ``benchmarks/results_io.py``) and a dotted key into it::

    61.9 ms <!-- result: deploy_speed.json#rows.0.ms -->
    87.4 % <!-- result: main_job.json#coco.bbox_mAP*100 -->

The number right before the marker (at most a unit between them) must
equal the stored value rounded to the decimals written. A stored Markdown
table (or tool output) is embedded verbatim between
``<!-- begin result: FILE.json#key -->`` and ``<!-- end result -->`` (a
block that is one code fence compares the fence's inside); a table whose
rows are the entries of a dict in the file follows
``<!-- result rows: FILE.json#key; COLUMN=field; ... -->``.

A lint finds measured-looking figures with no marker (times, memory,
speed ratios, APs, decimals in output fences) outside code: a figure that
is the paper's carries ``<!-- paper -->``, a value that is an input (a
time budget) carries ``<!-- setting -->``; anything else needs its results
file.
"""
import glob
import json
import os.path as osp
import re
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.conftest import ROOT

RESULTS = osp.join(ROOT, 'benchmarks', 'results')
PAGES = ['README.md'] + sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'docs', '*.md'))) + sorted(
        osp.relpath(p, ROOT)
        for p in glob.glob(osp.join(ROOT, 'docs', '*', '*.md')))

# Files transcribed from a page before results_io existed: no meta block,
# a 'source' key instead. Nothing new may join this set.
TRANSCRIBED = {'mini_table1_dense.json'}
META_KEYS = ('date', 'cpu', 'cpu_flags', 'threads', 'load_average', 'versions',
             'command')

NUM = r'\d[\d,]*(?:\.\d+)?'
# A key may hold spaces ('torch fp32') and dots ('x.py@128'): it ends at
# the optional '*100' and the comment's end.
MARKER = re.compile(r'<!--\s*result:\s*(?P<file>[^#\s]+)#(?P<key>[^*>]+?)'
                    r'(?P<pct>\*100)?\s*-->')
BEGIN = re.compile(r'^\s*<!--\s*begin result:\s*(?P<file>[^#\s]+)#'
                   r'(?P<key>[^>]+?)\s*-->\s*$')
END = re.compile(r'^\s*<!--\s*end result\s*-->\s*$')
# A table whose rows are entries of a dict in the file (no stored string):
# <!-- result rows: FILE.json#key; COLUMN=field; ... --> right above it;
# each row's first cell names the entry, each listed column's numbers
# (space-separated for a list) are checked against entry.field.
ROWS = re.compile(r'^\s*<!--\s*result rows:\s*(?P<file>[^#\s]+)#'
                  r'(?P<key>[^;>]+?)\s*;(?P<columns>[^>]*?)\s*-->\s*$')
# The figure a marker quotes: the last number before it, at most a unit
# (no digit) between them.
BEFORE = re.compile(r'(?P<num>[-−]?' + NUM + r')(?P<tail>[^\d]{0,24})$')
# A figure counts as marked when one of these follows within a unit's
# reach.
COVER = re.compile(r'^[^\d]{0,24}?<!--\s*(?:result:|paper\b|setting\b)')
ANY_MARKER = re.compile(r'<!--\s*(?:result:|paper\b|setting\b)')
RANGE = NUM + r'(?:\s*[–-]\s*' + NUM + r')?'
LINT = [
    ('time',
     re.compile(RANGE + r'\s*(?:ms|s|sec|seconds?|min|minutes?|h|'
                r'hours?)(?![\w/])')),
    ('memory', re.compile(NUM + r'\s*(?:KiB|MiB|GiB|MB|GB)\b')),
    ('ratio', re.compile(r'\d+\.\d+\s*×(?!\s*\d)')),
    ('ratio',
     re.compile(RANGE + r'\s*[×x]\s*(?:faster|slower|higher|lower|more|less|'
                r'longer|shorter|as\b|the time|its time|above|below)')),
    ('ratio',
     re.compile(r'\b(?:about|roughly) (?:a tenth|half|halves|double|'
                r'doubles|twice)\b')),
    ('share of time',
     re.compile(NUM + r'\s*%\s+of\s+(?:the\s+|its\s+)?(?:\w+\s+)?time\b')),
    # AP 0.0 / 1.0 are definitions (nothing found, a perfect score).
    ('AP', re.compile(r'\bAP(?:50|75)?\s+(?:of\s+)?(?![01]\.0+\b)\d+\.\d+')),
    ('AP', re.compile(r'\d+\.\d+\s+AP\b')),
]
# Fences whose content is prose-like output: decimals there are measured.
OUTPUT_FENCES = ('', 'text', 'console', 'json')
# A decimal of an output line: not inside a name, path or version
# (retina_r101_fpn_1.5x.py, mmcv 2.1.0, torch >= 2.6) nor a section number
# (Sec. 5.1).
OUTPUT_DECIMAL = re.compile(r'(?<![\w./-])(?<!Sec\. )(?<![<>=] )'
                            r'\d+\.\d+(?![\w.])')
# Command lines in a text fence are commands, not output.
# An output line is a measurement when it has a decimal and one of these.
OUTPUT_CUE = re.compile(r'AP|IoU|%|×|\b(?:ms|s|sec|min|MiB|GiB|loss|time|'
                        r'faster|slower)\b|:\s*\d+\.\d+\s*[,}]?\s*$')
COMMAND_LINE = re.compile(r'^\s*(?:#|\$|python3?\s|bash\s|pip\s)')
FENCE = re.compile(r'^\s*(```|~~~)\s*([\w+-]*)')


def _read(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read()


def load_results(name: str, results_dir: str = RESULTS) -> Dict[str, Any]:
    path = osp.join(results_dir, name)
    if not osp.isfile(path):
        raise KeyError(f'no results file benchmarks/results/{name}')
    return json.loads(_read(path))


def lookup(record: Any, key: str) -> Any:
    """``record`` at a dotted key (list indices as numbers; a dict key with
    dots of its own is matched whole, the longest first)."""
    value, parts = record, key.split('.')
    while parts:
        if isinstance(value, list):
            part = parts.pop(0)
            if not part.isdigit() or int(part) >= len(value):
                raise KeyError(f'{key}: no index {part!r}')
            value = value[int(part)]
            continue
        for n in range(len(parts), 0, -1):
            if isinstance(value, dict) and '.'.join(parts[:n]) in value:
                value, parts = value['.'.join(parts[:n])], parts[n:]
                break
        else:
            raise KeyError(f'{key}: no {parts[0]!r}')
    return value


def _strip_code_spans(line: str) -> str:
    """Inline code replaced by blanks (same length: columns stay)."""
    return re.sub(r'`[^`]*`', lambda m: ' ' * len(m.group()), line)


def _blank_comments(line: str) -> str:
    """HTML comments replaced by blanks (their numbers are not figures)."""
    return re.sub(r'<!--.*?-->', lambda m: ' ' * len(m.group()), line)


def scan(
    text: str
) -> Tuple[List[Tuple[int, str, str]], List[Tuple[int, str, str, int]],
           List[Tuple[int, str]]]:
    """Split a page into what the checks look at.

    Returns:
        prose lines ``(line number, kind, text)``, kind 'prose' or
        'output' (inside an output fence outside a result block);
        embedded blocks ``(line number, file, key, end line)``;
        problems found while splitting ``(line number, message)``.
    """
    lines = text.split('\n')
    prose, blocks, problems = [], [], []
    fence: Optional[Tuple[str, str]] = None
    block: Optional[Tuple[int, str, str]] = None
    for i, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if fence is not None:
            if m and m.group(1) == fence[0] and not m.group(2):
                fence = None
            elif fence[1] in OUTPUT_FENCES and block is None:
                prose.append((i, 'output', line))
            continue
        if m:
            fence = (m.group(1), m.group(2).lower())
            continue
        b, e = BEGIN.match(line), END.match(line)
        if b:
            if block is not None:
                problems.append((i, 'result block inside a result block'))
            block = (i, b.group('file'), b.group('key'))
        elif e:
            if block is None:
                problems.append((i, '<!-- end result --> without a begin'))
            else:
                blocks.append((*block, i))
                block = None
        elif block is None:
            prose.append((i, 'prose', line))
    if block is not None:
        problems.append((block[0], 'result block never ended'))
    return prose, blocks, problems


def check_page(text: str, page: str, results_dir: str = RESULTS) -> List[str]:
    """Every marker and block of ``text`` against its results file.

    Returns:
        ``page:line: message`` for each figure that differs from its file
        or whose file or key does not exist.
    """
    errors = []
    lines = text.split('\n')
    prose, blocks, problems = scan(text)
    errors += [f'{page}:{n}: {msg}' for n, msg in problems]
    cache: Dict[str, Any] = {}

    def value_of(name: str, key: str) -> Any:
        if name not in cache:
            cache[name] = load_results(name, results_dir)
        return lookup(cache[name], key)

    for n, kind, line in prose:
        if kind != 'prose':
            continue  # inside an output fence: an example, not a quote
        for m in MARKER.finditer(line):
            where = (f'{page}:{n}: {m.group("file")}#{m.group("key")}'
                     f'{m.group("pct") or ""}')
            before = _blank_comments(line[:m.start()]).rstrip()
            written = BEFORE.search(before)
            if written is None:
                errors.append(f'{where}: no number right before the marker')
                continue
            try:
                value = value_of(m.group('file'), m.group('key'))
            except (KeyError, ValueError) as e:
                errors.append(f'{where}: {e.args[0]}')
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(f'{where}: stored {value!r} is not a number')
                continue
            if m.group('pct'):
                value = value * 100
            if not _matches(written.group('num'), value):
                expected = _as_written(written.group('num'), value)
                errors.append(f'{where}: page says {written.group("num")}, '
                              f'the file {expected} ({value:.6g})')
    for n, kind, line in prose:
        m = ROWS.match(line)
        if m and kind == 'prose':
            errors += _check_rows(m, lines, n, page, value_of)
    for start, name, key, end in blocks:
        where = f'{page}:{start}: {name}#{key}'
        try:
            stored = value_of(name, key)
        except (KeyError, ValueError) as e:
            errors.append(f'{where}: {e.args[0]}')
            continue
        body = lines[start:end - 1]
        if body and FENCE.match(body[0]) and FENCE.match(body[-1]) \
                and len(body) >= 2:
            body = body[1:-1]
        got = '\n'.join(body).strip('\n')
        if not isinstance(stored, str):
            errors.append(f'{where}: stored value is not a string')
        elif got != stored.strip('\n'):
            errors.append(f'{where}: the embedded block differs from the '
                          'stored string (paste it again)')
    return errors


def _as_written(written: str, value: float) -> str:
    """``value`` rounded to the decimals of ``written`` (no thousands
    separator, no sign on a zero)."""
    num = written.replace(',', '')
    decimals = len(num.split('.')[1]) if '.' in num else 0
    expected = f'{value:.{decimals}f}'
    return expected.lstrip('-') if float(expected) == 0 else expected


def _matches(written: str, value: Any) -> bool:
    """A number as written equals ``value`` rounded to its decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    num = written.replace(',', '').replace('−', '-')
    return _as_written(num, value) == num


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip('|').split('|')]


def _check_rows(m, lines: List[str], n: int, page: str, value_of) -> List[str]:
    """A ``result rows`` table against the dict entries it names."""
    where = f'{page}:{n}: {m.group("file")}#{m.group("key")}'
    columns = [c.split('=', 1) for c in m.group('columns').split(';')]
    if any(len(c) != 2 for c in columns):
        return [f'{where}: expected "; COLUMN=field" pairs']
    table = []
    for line in lines[n:]:
        if not line.strip().startswith('|'):
            if table:
                break
            continue
        table.append(_cells(line))
    if len(table) < 3:
        return [f'{where}: no table under the marker']
    header, errors = table[0], []
    for column, field in columns:
        if column.strip() not in header:
            errors.append(f'{where}: no column {column.strip()!r}')
    if errors:
        return errors
    for row in table[2:]:
        entry = row[0].strip('`* ')
        for column, field in columns:
            cell = row[header.index(column.strip())]
            key = f'{m.group("key")}.{entry}.{field.strip()}'
            try:
                value = value_of(m.group('file'), key)
            except (KeyError, ValueError) as e:
                errors.append(f'{where}: {e.args[0]}')
                continue
            values = value if isinstance(value, list) else [value]
            written = re.findall(r'[-−]?' + NUM, cell)
            if len(written) != len(values) or not all(
                    _matches(w, v) for w, v in zip(written, values)):
                errors.append(f'{where}: row {entry!r}, column '
                              f'{column.strip()!r}: page says {cell!r}, '
                              f'the file {values}')
    return errors


def lint_page(text: str, page: str) -> List[str]:
    """Measured-looking figures of ``text`` that carry no marker.

    Returns:
        ``page:line: kind 'figure'`` for each.
    """
    errors = []
    prose, _, _ = scan(text)
    for n, kind, line in prose:
        clean = _strip_code_spans(line)
        if kind == 'output':
            if not COMMAND_LINE.match(clean) and OUTPUT_DECIMAL.search(
                    clean) and OUTPUT_CUE.search(clean):
                errors.append(f'{page}:{n}: measured output in a fence '
                              'outside a result block: '
                              f'{line.strip()[:60]!r}')
            continue
        taken: List[range] = []  # one figure, one error
        for what, pattern in LINT:
            for m in pattern.finditer(_blank_comments(clean)):
                if any(m.start() < r.stop and r.start < m.end()
                       for r in taken):
                    continue
                taken.append(range(m.start(), m.end()))
                # the marker follows the figure, or sits between the
                # number and its unit ('34.6 <!-- result: ... --> AP')
                inside = ANY_MARKER.search(clean, m.start(), m.end())
                if inside is None and not COVER.match(clean[m.end():]):
                    errors.append(f'{page}:{n}: unmarked {what} figure '
                                  f'{m.group().strip()!r}')
    return errors


def check_results_file(name: str, results_dir: str = RESULTS) -> List[str]:
    """A results file parses and carries its meta block."""
    try:
        record = load_results(name, results_dir)
    except (KeyError, ValueError) as e:
        return [f'{name}: {e.args[0]}']
    if name in TRANSCRIBED:
        return [] if 'source' in record else [f'{name}: no source']
    meta = record.get('meta')
    if not isinstance(meta, dict):
        return [f'{name}: no meta block (write it with results_io)']
    return [f'{name}: meta has no {k!r}' for k in META_KEYS if k not in meta]


# ---------------------------------------------------------------- the pages


@pytest.mark.parametrize('page', PAGES)
def test_quoted_figures_match_their_results_files(page):
    errors = check_page(_read(osp.join(ROOT, page)), page)
    assert not errors, '\n'.join(errors)


@pytest.mark.parametrize('page', PAGES)
def test_no_unmarked_measured_figures(page):
    errors = lint_page(_read(osp.join(ROOT, page)), page)
    assert not errors, '\n'.join(errors)


@pytest.mark.parametrize(
    'name',
    sorted(osp.basename(p) for p in glob.glob(osp.join(RESULTS, '*.json'))))
def test_results_files_have_their_meta(name):
    errors = check_results_file(name)
    assert not errors, '\n'.join(errors)


# ---------------------------------------------------- the checker can fail


@pytest.fixture
def results_dir(tmp_path):
    record = {
        'meta': {
            k: None
            for k in META_KEYS
        },
        'rows': [{
            'ms': 61.94,
            'ratio': 0.8
        }],
        'ap': 0.7741,
        'by': {
            'torch fp32': {
                'x.py@128': 8.14
            }
        },
        'table': '| a | b |\n|---|---|\n| 1 | 2 |',
    }
    (tmp_path / 'bench.json').write_text(json.dumps(record))
    (tmp_path / 'bare.json').write_text(json.dumps({'x': 1}))
    return str(tmp_path)


def test_checker_accepts_figures_as_stored(results_dir):
    page = '\n'.join([
        'Per image 61.9 ms <!-- result: bench.json#rows.0.ms --> and',
        '0.80× <!-- result: bench.json#rows.0.ratio --> of fp32;',
        'AP 77.4 <!-- result: bench.json#ap*100 -->, or 0.774 '
        '<!-- result: bench.json#ap -->, or 62 ms '
        '<!-- result: bench.json#rows.0.ms -->, AP 8.1 '
        '<!-- result: bench.json#by.torch fp32.x.py@128 -->.',
        '<!-- begin result: bench.json#table -->', '| a | b |', '|---|---|',
        '| 1 | 2 |', '<!-- end result -->',
        'The paper: 198 ms <!-- paper --> at 800 px; 77.4 '
        '<!-- result: bench.json#ap*100 --> AP.', '```bash',
        'python x.py  # 5 min', '```'
    ])
    assert check_page(page, 'p.md', results_dir) == []
    assert lint_page(page, 'p.md') == []


def test_checker_finds_a_wrong_figure(results_dir):
    page = ('AP 77.5 <!-- result: bench.json#ap*100 --> and\n'
            'AP50 0.97 <!-- result: bench.json#ap -->\n'
            '61.9 ms <!-- result: bench.json#rows.0.nope -->\n'
            '1.0 <!-- result: missing.json#x -->\n')
    errors = check_page(page, 'p.md', results_dir)
    assert errors[0] == ('p.md:1: bench.json#ap*100: page says 77.5, the '
                         'file 77.4 (77.41)')
    assert errors[1].startswith('p.md:2: bench.json#ap: page says 0.97, '
                                'the file 0.77')
    assert errors[2].startswith('p.md:3: bench.json#rows.0.nope: ')
    assert errors[3].startswith('p.md:4: missing.json#x: no results file')
    assert len(errors) == 4


def test_checker_finds_a_stale_block(results_dir):
    page = ('<!-- begin result: bench.json#table -->\n| a | b |\n'
            '|---|---|\n| 1 | 3 |\n<!-- end result -->\n'
            '<!-- begin result: bench.json#table -->\n')
    errors = check_page(page, 'p.md', results_dir)
    assert errors == [
        'p.md:6: result block never ended',
        'p.md:1: bench.json#table: the embedded block differs from the '
        'stored string (paste it again)'
    ]


def test_checker_checks_table_rows(results_dir):
    record = {
        'meta': {
            k: None
            for k in META_KEYS
        },
        'summary': {
            'fl_g2': {
                'AP': 25.12,
                'seeds': [26.2, 24.1]
            },
            'ohem': {
                'AP': 3.2,
                'seeds': [3.8, 2.6]
            }
        }
    }
    with open(osp.join(results_dir, 'mt.json'), 'w') as f:
        json.dump(record, f)
    good = ('<!-- result rows: mt.json#summary; AP=AP; per seed=seeds -->\n'
            '\n| method | setting (alpha .25) | AP | per seed |\n'
            '|---|---|---|---|\n| fl_g2 | FL | 25.1 | 26.2 24.1 |\n'
            '| `ohem` | OHEM 1:3 | 3.2 | 3.8 2.6 |\n\nText.')
    assert check_page(good, 'p.md', results_dir) == []
    bad = good.replace('25.1', '25.2').replace('| `ohem`', '| ohem13')
    errors = check_page(bad, 'p.md', results_dir)
    assert errors == [
        "p.md:1: mt.json#summary: row 'fl_g2', column 'AP': page says "
        "'25.2', the file [25.12]", "p.md:1: mt.json#summary: "
        "summary.ohem13.AP: no 'ohem13'", "p.md:1: mt.json#summary: "
        "summary.ohem13.seeds: no 'ohem13'"
    ]


def test_lint_finds_unmarked_figures():
    page = '\n'.join([
        '# Speed', '',
        'R-50 fp32 takes 878.8 ms per image, `--amp` about halves it;',
        'the loss is 0.092× of mmdet, 5–10× slower under load.',
        'The main job reaches AP 0.774 (77.4 AP) in 10.3 minutes, 614 MiB.',
        '```text', 'bbox AP 0.774', '```', '```bash',
        'python tools/train.py x.py  # 10 minutes', '```',
        'A 4×256 tower, 608×800 input, 8 × 2 images, `--time-budget 360`.'
    ])
    errors = lint_page(page, 'p.md')
    assert errors == [
        "p.md:3: unmarked time figure '878.8 ms'",
        "p.md:3: unmarked ratio figure 'about halves'",
        "p.md:4: unmarked ratio figure '0.092×'",
        "p.md:4: unmarked ratio figure '5–10× slower'",
        "p.md:5: unmarked time figure '10.3 minutes'",
        "p.md:5: unmarked memory figure '614 MiB'",
        "p.md:5: unmarked AP figure 'AP 0.774'",
        "p.md:5: unmarked AP figure '77.4 AP'",
        "p.md:7: measured output in a fence outside a result block: "
        "'bbox AP 0.774'",
    ]


def test_results_file_needs_its_meta(results_dir):
    assert check_results_file('bench.json', results_dir) == []
    assert check_results_file('bare.json', results_dir) == [
        'bare.json: no meta block (write it with results_io)'
    ]


def test_results_io_writes_what_the_checker_reads(tmp_path):
    import sys
    sys.path.insert(0, ROOT)
    from benchmarks import results_io
    path = results_io.write_results(
        'demo', {'t': {
            'ms': 12.345
        }}, ['benchmarks/x.py', '--results', 'demo'],
        results_dir=str(tmp_path))
    assert path == str(tmp_path / 'demo.json')
    assert check_results_file('demo.json', str(tmp_path)) == []
    record = results_io.read_results('demo', str(tmp_path))
    assert record['meta']['command'] == 'benchmarks/x.py --results demo'
    page = results_io.quote(record, 'demo', 't.ms', 1) + ' per image'
    assert page == '12.3 <!-- result: demo.json#t.ms --> per image'
    assert check_page(page, 'p.md', str(tmp_path)) == []
    with pytest.raises(ValueError, match='no directories'):
        results_io.results_path('../x')
