"""The documentation cannot drift from the code.

Every command of README.md and docs/*.md must start: each command line of
every fenced block that can hold commands (``bash``, ``sh``, ``shell``, the
``$ `` lines of ``console``, and ``text`` or untyped blocks too) and each
inline code span that starts a script of the repository. Starting means the
script exists, its own argparse accepts the arguments, the config it names
loads and a ``--test-dev NAME`` passes the evaluation server's name check
(``projects.focal_retina.utils.commands``); a config the page has the reader
write (``my_configs/NAME.py`` named right before a ``python`` block) is
written from that block first. Commands are fenced as ``bash`` (``console``
with ``$ `` prompts where output follows them), so that they are
highlighted, copied and checked alike. Every repository path named in prose
exists, and no page names a path of the machine it was written on or speaks
of "this machine".
"""
import glob
import os
import os.path as osp
import re
from typing import Dict, List, NamedTuple, Tuple

import pytest

from projects.focal_retina.utils.commands import check_command
from tests.conftest import ROOT

PAGES = ['README.md'] + sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'docs', '*.md')))
# A command starts one of the repository's scripts.
SCRIPT = re.compile(r'^(?:[A-Z_]+=\S+\s+)*(?:python3?|\.venv/bin/python|bash)'
                    r'\s+(?:tools|benchmarks)/\S+')
# A line a user types into a shell: a program (or a variable assignment
# before one) first. Output, trees and data layouts do not start so.
COMMAND = re.compile(
    r'^(?:[A-Z_]+=\S+\s+)*(?:python3?|\.venv/bin/\S+|bash|sh|pip3?|git|'
    r'source|cd|export|for|torchrun|srun|sbatch|mkdir|ln|cp|mv|rm|wget|'
    r'curl|unzip|tar|conda|docker|nice|cat|ls)(?:\s|$)')
# Fences whose every line is shell; console blocks prompt with "$ ".
SHELL_FENCES = ('bash', 'sh', 'shell', 'zsh')
# Fences that hold code or data, never a command line.
CODE_FENCES = ('python', 'py', 'bibtex', 'json', 'yaml', 'yml', 'toml', 'ini',
               'cfg', 'diff', 'csv')
FENCE = re.compile(r'^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$')
# A config the page has the reader write, named before its python block.
USER_CONFIG = re.compile(r'`(my_configs/[\w.-]+\.py)`')
# ``python tools/make_config.py NAME ...`` writes my_configs/NAME.py.
MADE_CONFIG = re.compile(r'python3? tools/make_config\.py\s+([\w.-]+)\s')
# Top-level folders whose paths named in prose must exist.
REPO_DIRS = ('benchmarks', 'configs', 'docs', 'projects', 'requirements',
             'tests', 'tools')
REPO_PATH = re.compile(r'`((?:%s)/[^`\s]*)`' % '|'.join(REPO_DIRS))
# An upper-case path part (``NAME.json``, ``N``): a placeholder.
PLACEHOLDER_PART = re.compile(r'(?:^|/)(?!README\b)[A-Z][A-Z0-9_]*(?:\.\w+)?'
                              r'(?:/|$)')
MACHINE_PATH = re.compile(r'(?<![\w.~])/(?:work|root|home|tmp|mnt)/\S*')
LOCAL_WORDS = re.compile(
    r'\bthis machine\b|\bissue \d+|\bSPEC\b|the local CPU wheel here',
    re.IGNORECASE)


def _read(page: str) -> str:
    with open(osp.join(ROOT, page), encoding='utf-8') as f:
        return f.read()


class Block(NamedTuple):
    """A fenced block: its language ('' untyped), its lines (the fence's
    indentation removed), the line number of its opening fence, and the
    prose between the previous block and this one."""
    lang: str
    lines: List[str]
    line: int
    before: str


def fenced_blocks(text: str) -> List[Block]:
    """Every fenced block of a Markdown page, indented ones (in lists)
    included; a fence closes with the same character, at least as long."""
    blocks, lines, i, prose_start = [], text.splitlines(), 0, 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3)
        j = i + 1
        while j < len(lines):
            close = FENCE.match(lines[j])
            if close and close.group(2).startswith(fence) and \
                    not close.group(3):
                break
            j += 1
        body = [
            line[indent:] if line[:indent].isspace() else line.lstrip()
            for line in lines[i + 1:j]
        ]
        blocks.append(
            Block(lang.lower(), body, i + 1, '\n'.join(lines[prose_start:i])))
        i = prose_start = j + 1
    return blocks


def _shell_lines(lines: List[str]) -> List[str]:
    """Logical command lines: continuations joined, comments dropped,
    ``a && b``, ``a || b`` and ``a; b`` split."""
    out = []
    joined = re.sub(r'\s*\\\n\s*', ' ', '\n'.join(lines))
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith('#'):
            continue
        line = line.split(' #')[0].strip()
        out += [p for p in re.split(r'\s*(?:&&|\|\||;)\s*', line) if p]
    return out


def block_commands(block: Block) -> List[str]:
    """The command lines of a block: every line of a shell fence, the
    ``$ `` lines of a console block (with their continuations), and the
    lines of a text or untyped block that look like commands."""
    if block.lang in CODE_FENCES:
        return []
    if block.lang == 'console':
        prompted, keep = [], False
        for line in block.lines:
            if line.startswith('$ '):
                prompted.append(line[2:])
                keep = line.rstrip().endswith('\\')
            elif keep:
                prompted.append(line)
                keep = line.rstrip().endswith('\\')
        return _shell_lines(prompted)
    lines = _shell_lines(block.lines)
    if block.lang in SHELL_FENCES:
        return lines
    return [line for line in lines if COMMAND.match(line)]


def bash_commands(text: str) -> List[str]:
    """The command lines of the page's fenced blocks (every kind that can
    hold commands) that start a script of the repository."""
    return [
        c for block in fenced_blocks(text) for c in block_commands(block)
        if SCRIPT.match(c)
    ]


def inline_commands(text: str) -> List[str]:
    """Inline code spans outside fenced blocks that start a script (the
    paper table's train and test commands, for instance)."""
    prose = re.sub(r'```.*?```', '', text, flags=re.S)
    return [c for c in re.findall(r'`([^`\n]+)`', prose) if SCRIPT.match(c)]


def user_configs(text: str) -> Dict[str, str]:
    """{``my_configs/NAME.py``: its text} for each config the page has the
    reader write: a ``python`` block right after prose naming the file."""
    found = {}
    for block in fenced_blocks(text):
        names = USER_CONFIG.findall(block.before)
        if block.lang == 'python' and names:
            found[names[-1]] = '\n'.join(block.lines) + '\n'
    return found


def all_commands() -> List[Tuple[str, str]]:
    found = []
    for page in PAGES:
        text = _read(page)
        for command in bash_commands(text) + inline_commands(text):
            found.append((page, command))
    return found


COMMANDS = all_commands()


def test_the_docs_have_commands():
    """The extraction works (an empty list would make the next test pass
    vacuously): the README's two commands, the 8-GPU command and the
    own-data steps that train on the reader's config are in."""
    readme = [c for page, c in COMMANDS if page == 'README.md']
    assert 'bash tools/run_main_job.sh' in readme
    assert 'bash tools/run_tests.sh' in readme
    assert any(
        c.startswith('bash tools/dist_train.sh') and c.endswith(' 8')
        for c in readme)
    assert any('--test-dev' in c for c in readme)
    assert any(
        c.startswith('python tools/train.py my_configs/mine.py')
        for c in readme)
    own_data = [c for page, c in COMMANDS if page == 'docs/own_data.md']
    assert any(c.startswith('python benchmarks/bccd.py') for c in own_data)


def test_every_fence_kind_is_read():
    """Commands in ``shell``/``sh`` fences, behind ``$ `` in ``console``
    blocks (output lines skipped), in ``text`` and untyped blocks and in
    indented fences are found; python and output are not commands."""
    page = r'''
```shell
python tools/train.py a.py \
    --amp
```
```console
$ python tools/test.py a.py b.pth
AP 0.5
python tools/not_a_command.py
$ bash tools/dist_test.sh \
    a.py b.pth 8
```
```text
OMP_NUM_THREADS=1 python benchmarks/x.py --quick
main job
```
- a list item:

   ```
   python tools/infer.py c.py
   ```
```python
run('python tools/nope.py')
```
~~~sh
cd x && python tools/y.py; python tools/z.py
~~~
'''
    assert bash_commands(page) == [
        'python tools/train.py a.py --amp', 'python tools/test.py a.py b.pth',
        'bash tools/dist_test.sh a.py b.pth 8',
        'OMP_NUM_THREADS=1 python benchmarks/x.py --quick',
        'python tools/infer.py c.py', 'python tools/y.py', 'python tools/z.py'
    ]


def _with_user_configs(page: str, command: str, tmp_path) -> str:
    """``command`` with each ``my_configs/NAME.py`` it names written from
    the page's own block into ``tmp_path`` (beside a link to configs/, so
    that its ``_base_ = '../configs/...'`` resolves) and named there."""
    named = re.findall(r'(?<![\w/])my_configs/[\w.-]+\.py', command)
    if not named:
        return command
    text = _read(page)
    written = user_configs(text)
    for made in MADE_CONFIG.findall(text):
        # Written by tools/make_config.py: the same config by hand, from
        # the page that shows it (the README's step 2: docs/own_data.md).
        name = f'my_configs/{made}.py'
        by_hand = [user_configs(_read(p)).get(name) for p in PAGES]
        by_hand = [c for c in by_hand if c]
        if name not in written and by_hand:
            written[name] = by_hand[0]
    for name in named:
        assert name in written, (
            f'{page}: `{command}` names {name}, which the page does not '
            'write (a python block right after prose naming it, or '
            'tools/make_config.py with such a block on another page)')
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(written[name])
    if not (tmp_path / 'configs').exists():
        os.symlink(osp.join(ROOT, 'configs'), tmp_path / 'configs')
    return re.sub(r'(?<![\w/])my_configs/', f'{tmp_path}/my_configs/', command)


@pytest.mark.parametrize(
    'page,command', COMMANDS, ids=[f'{p}:{c[:60]}' for p, c in COMMANDS])
def test_documented_command_starts(page, command, tmp_path):
    problems = check_command(_with_user_configs(page, command, tmp_path), ROOT)
    assert not problems, f'{page}: `{command}`: ' + '; '.join(problems)


@pytest.mark.parametrize('page', PAGES)
def test_commands_are_fenced_as_bash(page):
    """A command in a ``text``, ``shell`` or untyped block is not
    highlighted as one; a ``console`` block prompts every command with
    ``$ ``. Output and layouts stay in ``text`` blocks."""
    wrong = misfenced_commands(_read(page))
    assert not wrong, (f'{page}: commands outside ```bash fences: ' +
                       '; '.join(wrong))


def misfenced_commands(text: str) -> List[str]:
    """Where a page has a command outside a ``bash`` fence (or a console
    command without its prompt): 'line N (```lang): command'."""
    wrong = []
    for block in fenced_blocks(text):
        if block.lang in ('bash', ) + CODE_FENCES:
            continue
        if block.lang == 'console':
            wrong += [
                f'line {block.line} (console, no "$ "): {line}'
                for line in block.lines
                if COMMAND.match(line.strip()) and not line.startswith('$ ')
            ]
            continue
        commands = block_commands(block)
        if commands:
            wrong.append(f'line {block.line} (```{block.lang}): '
                         f'{commands[0]}')
    return wrong


def test_the_fence_check_bites():
    """Commands in text, shell and untyped blocks and a console command
    without its prompt are reported; output, layouts, python and prompted
    console commands are not."""
    page = r'''
```text
main job summary
  bbox AP 0.774
data/coco/{train2017,val2017}/
```
```console
$ python tools/test.py a.py b.pth
AP 0.5
```
```python
import os
```
```text
.venv/bin/python -m pip install -e .
```
```shell
python tools/train.py a.py
```
```
bash tools/run_tests.sh
```
```console
python tools/infer.py a.py b.pth
```
'''
    assert misfenced_commands(page) == [
        'line 14 (```text): .venv/bin/python -m pip install -e .',
        'line 17 (```shell): python tools/train.py a.py',
        'line 20 (```): bash tools/run_tests.sh',
        'line 23 (console, no "$ "): python tools/infer.py a.py b.pth'
    ]


@pytest.mark.parametrize('page', PAGES)
def test_named_repository_paths_exist(page):
    missing = []
    for path in REPO_PATH.findall(_read(page)):
        path = path.rstrip('.,:;)')
        if any(ch in path for ch in '*<>{}[]$') or '...' in path or \
                PLACEHOLDER_PART.search(path):
            continue  # a pattern or a placeholder, not a path
        if not osp.exists(osp.join(ROOT, path.split('::')[0])):
            missing.append(path)
    assert not missing, f'{page} names paths that do not exist: {missing}'


@pytest.mark.parametrize('page', PAGES)
def test_no_machine_paths_or_local_words(page):
    text = _read(page)
    paths = MACHINE_PATH.findall(text)
    assert not paths, f'{page}: absolute machine paths {paths}'
    words = LOCAL_WORDS.findall(text)
    assert not words, f'{page}: words only its writer understands {words}'


def test_readme_is_short_and_finds_the_main_paths_early():
    lines = _read('README.md').splitlines()
    assert len(lines) <= 250, len(lines)
    head = '\n'.join(lines[:150])
    assert re.search(r'bash tools/dist_train\.sh \S+ 8', head)
    assert '--test-dev' in head
    assert '_base_' in head  # the inheritance example
    assert re.search(r'own data', head, re.IGNORECASE)


def _configs_without_budget_schedules() -> List[str]:
    """The folders of configs/ holding a config whose lr schedule is not
    written as fractions of the run (a scheduler other than
    ``BudgetLinearLR`` / ``BudgetMultiStepLR``)."""
    from projects.focal_retina.engine.cli import read_config
    folders = set()
    for path in glob.glob(
            osp.join(ROOT, 'configs', '**', '*.py'), recursive=True):
        if '_base_' in path:
            continue
        schedulers = read_config(path).get('param_scheduler') or []
        if isinstance(schedulers, dict):
            schedulers = [schedulers]
        if not schedulers or not all(
                str(s.get('type', '')).startswith('Budget')
                for s in schedulers):
            folders.add(osp.relpath(osp.dirname(path), ROOT) + '/')
    return sorted(folders)


def test_schedule_claims_name_their_exceptions():
    """A sentence saying that every config writes its schedule as
    fractions of the run names the folders whose configs do not
    (mmdet's released models keep mmdet's epoch schedule); the pages
    said "every config we ship" without them."""
    exceptions = _configs_without_budget_schedules()
    assert 'configs/pretrained/' in exceptions  # the check sees them
    claims = []
    for page in PAGES:
        text = re.sub(r'\s+', ' ',
                      re.sub(r'```.*?```', '', _read(page), flags=re.S))
        for sentence in re.split(r'(?<=\.) (?=[A-Z`])', text):
            if re.search(r'\bevery config\b', sentence, re.I) and \
                    'fraction' in sentence:
                claims.append(page)
                missing = [f for f in exceptions if f'`{f}`' not in sentence]
                assert not missing, (
                    f'{page}: "{sentence[:120]}..." does not name {missing}')
    assert 'docs/train_test.md' in claims


@pytest.mark.parametrize('page', ['README.md', 'docs/train_test.md'])
def test_test_dev_upload_is_described_as_the_code_writes_it(page, tmp_path):
    """Next to the ``--test-dev`` command the page says where the zip goes
    and what the server reads from the file name; the file the code
    writes is the page's ``detections_test-dev2017_NAME_results.json``
    with NAME put in, alone in the zip, and the name check the page
    states (letters, digits and ``-``: the server splits on ``_``) is the
    one the code makes."""
    import json
    import zipfile

    import numpy as np

    from projects.focal_retina.evaluation.testdev import (
        CocoTestDevSubmission, submission_name_problem)
    text = re.sub(r'\s+', ' ', _read(page))
    assert 'EvalAI' in text and 'https://cocodataset.org/#upload' in text
    template = re.search(r'`(detections_test-dev2017_NAME_results\.json)`',
                         text)
    assert template, f'{page} does not give the submission file name'
    assert re.search(r'letters, digits and `-` only', text)
    assert re.search(r'split on `_`|splits (?:that|the) file name on `_`',
                     text)
    assert '.zip' in text

    info = tmp_path / 'image_info_test-dev2017.json'
    info.write_text(
        json.dumps(
            dict(
                images=[dict(id=7, width=32, height=32, file_name='7.jpg')],
                categories=[dict(id=18, name='dog')])))
    metric = CocoTestDevSubmission(
        ann_file=str(info), out_dir=str(tmp_path / 'out'), name='my-Net2')
    metric.dataset_meta = dict(classes=('dog', ))
    pred = dict(
        img_id=7,
        bboxes=np.array([[1., 2., 11., 22.]]),
        scores=np.array([0.5]),
        labels=np.array([0]))
    metric.compute_metrics([(dict(img_id=7), pred)])
    expected = template.group(1).replace('NAME', 'my-Net2')
    assert osp.basename(metric.result_file) == expected
    with zipfile.ZipFile(metric.result_file[:-len('.json')] + '.zip') as z:
        assert z.namelist() == [expected]
        assert json.loads(z.read(expected)) == [
            dict(
                image_id=7, category_id=18, bbox=[1., 2., 10., 20.], score=0.5)
        ]
    # Letters, digits and '-' pass; '_' (the separator) and others fail.
    assert submission_name_problem('my-Net2') is None
    for bad in ('my_net', 'my.net', 'my net', ''):
        assert submission_name_problem(bad), bad
