"""The documentation cannot drift from the code.

Every command of README.md and docs/*.md — each line of a fenced ``bash``
block and each inline code span that starts a script of the repository —
must start: the script exists, its own argparse accepts the arguments, the
config it names loads and a ``--test-dev NAME`` passes the evaluation
server's name check (``projects.focal_retina.utils.commands``). Every
repository path named in prose exists, and no page names a path of the
machine it was written on or speaks of "this machine".
"""
import glob
import os.path as osp
import re
from typing import List, Tuple

import pytest

from projects.focal_retina.utils.commands import check_command
from tests.conftest import ROOT

PAGES = ['README.md'] + sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'docs', '*.md')))
# A command starts one of the repository's scripts.
SCRIPT = re.compile(r'^(?:[A-Z_]+=\S+\s+)*(?:python3?|\.venv/bin/python|bash)'
                    r'\s+(?:tools|benchmarks)/\S+')
# Top-level folders whose paths named in prose must exist.
REPO_DIRS = ('benchmarks', 'configs', 'docs', 'projects', 'requirements',
             'tests', 'tools')
REPO_PATH = re.compile(r'`((?:%s)/[^`\s]*)`' % '|'.join(REPO_DIRS))
MACHINE_PATH = re.compile(r'(?<![\w.~])/(?:work|root|home|tmp|mnt)/\S*')
LOCAL_WORDS = re.compile(
    r'\bthis machine\b|\bissue \d+|\bSPEC\b|the local CPU wheel here',
    re.IGNORECASE)


def _read(page: str) -> str:
    with open(osp.join(ROOT, page), encoding='utf-8') as f:
        return f.read()


def bash_commands(text: str) -> List[str]:
    """The command lines of the fenced ``bash`` blocks (continuations
    joined, comments dropped, ``a && b`` split) that start a script of the
    repository."""
    out = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        joined = re.sub(r'\\\n\s*', ' ', block)
        for line in joined.splitlines():
            line = line.split(' #')[0].strip()
            for part in re.split(r'\s*(?:&&|\|\||;)\s*', line):
                if SCRIPT.match(part):
                    out.append(part)
    return out


def inline_commands(text: str) -> List[str]:
    """Inline code spans outside fenced blocks that start a script (the
    paper table's train and test commands, for instance)."""
    prose = re.sub(r'```.*?```', '', text, flags=re.S)
    return [c for c in re.findall(r'`([^`\n]+)`', prose) if SCRIPT.match(c)]


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
    vacuously): the README's two commands and the 8-GPU command are in."""
    readme = [c for page, c in COMMANDS if page == 'README.md']
    assert 'bash tools/run_main_job.sh' in readme
    assert 'bash tools/run_tests.sh' in readme
    assert any(c.startswith('bash tools/dist_train.sh') and c.endswith(' 8')
               for c in readme)
    assert any('--test-dev' in c for c in readme)


@pytest.mark.parametrize('page,command', COMMANDS,
                         ids=[f'{p}:{c[:60]}' for p, c in COMMANDS])
def test_documented_command_starts(page, command):
    problems = check_command(command, ROOT)
    assert not problems, f'{page}: `{command}`: ' + '; '.join(problems)


@pytest.mark.parametrize('page', PAGES)
def test_named_repository_paths_exist(page):
    missing = []
    for path in REPO_PATH.findall(_read(page)):
        path = path.rstrip('.,:;)')
        if any(ch in path for ch in '*<>{}[]$') or '...' in path:
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
