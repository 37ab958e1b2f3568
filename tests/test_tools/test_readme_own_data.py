"""The README's "Your own data" steps, run as written.

The commands are read from the README (its shell fences in that section;
step 2 writes the config with tools/make_config.py), not copied here, and
run in that order in a folder laid out like a clone (``tools``, ``configs``
and ``projects`` linked to this one), on the example export of step 0.
The only additions are a small budget: 10 photos instead of 40,
``--cfg-options train_cfg.max_iters=2`` (the override the README
documents) and no dataloader workers. Every path a step names must
exist once that step has run (a later step cannot name a file no earlier
step wrote), and so must every file the section's text names.

A COCO start downloads mmdet's weights: here a stand-in with the keys and
shapes of mmdet's own model (built from mmdet's config of that name, random
weights, in mmdet's model-zoo layout) lies at the cache path the README
tells offline users to fill, staged before the first step that names the
config, and a proxy that refuses connections makes sure nothing is
downloaded.

docs/own_data.md walks the same path: it runs the same commands, and its
config written by hand is, once mmengine has resolved it, the config the
README's step 2 writes.
"""
import ast
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
from typing import List, Tuple

import pytest
import torch

from tests.conftest import ROOT
from tests.test_tools.test_cli import tool_env

SHELL = ('bash', 'sh', 'shell', 'console', 'text')
# The budget: appended to the README's commands, per tool.
NO_WORKERS = [
    f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
    for key in ('num_workers=0', 'persistent_workers=False')
]
SMALL = {
    'tools/make_own_data_example.py': ['--num', '10'],
    'tools/train.py': [
        '--cfg-options', 'train_cfg.max_iters=2',
        'train_dataloader.batch_size=2', *NO_WORKERS
    ],
    'tools/test.py': ['--cfg-options', *NO_WORKERS],
}
# Options whose value a converter writes under another name: with --split,
# OUT.json becomes OUT_train.json and OUT_val.json.
SPLIT_OUT = '--out'


def section(path: str, title: str) -> str:
    """The text of the ``## title`` section of a markdown file."""
    text = open(path, encoding='utf-8').read()
    start = text.index(f'\n## {title}\n')
    end = text.find('\n## ', start + 1)
    return text[start:end if end >= 0 else None]


def fences(text: str) -> List[Tuple[str, str, int]]:
    """(language, body, offset) of each fenced block."""
    return [(m.group(1), m.group(2), m.start())
            for m in re.finditer(r'^```(\w*)\n(.*?)^```', text, re.M | re.S)]


def commands(text: str) -> List[str]:
    """The commands of the shell fences, comments dropped, continued lines
    joined."""
    out = []
    for lang, body, _ in fences(text):
        if lang not in SHELL:
            continue
        body = body.replace('\\\n', ' ')
        out += [
            ln.strip() for ln in body.splitlines()
            if ln.strip() and not ln.strip().startswith('#')
        ]
    return out


def config_block(text: str) -> Tuple[str, str]:
    """(file name, code) of the python fence: the file is the last
    ``my_configs/*.py`` path in backticks in the prose before it."""
    blocks = [(b, at) for lang, b, at in fences(text) if lang == 'python']
    assert len(blocks) == 1, 'expected one python fence (the config)'
    body, at = blocks[0]
    prose = text[:at].split('```')[-1]
    names = re.findall(r'`(my_configs/[\w.-]+\.py)`', prose)
    assert names, f'no config name before the config fence: {prose!r}'
    return names[-1], body


def resolved(path: str) -> dict:
    """A config as mmengine resolves it (its bases merged)."""
    from mmengine.config import Config
    return Config.fromfile(path).to_dict()


def named_paths(args: List[str]) -> List[str]:
    """The arguments that name files or folders: relative paths with a
    folder, no URLs."""
    return [
        a for a in args
        if '/' in a and '://' not in a and not a.startswith(('-', '/', '~'))
    ]


def written(path: str, args: List[str]) -> bool:
    """``path`` exists, or was written under the converters' split names."""
    if osp.exists(path):
        return True
    i = args.index(path) if path in args else -1
    if i > 0 and args[i - 1] == SPLIT_OUT and '--split' in args:
        stem, ext = osp.splitext(path)
        return all(osp.isfile(f'{stem}_{s}{ext}') for s in ('train', 'val'))
    return False


def zoo_stand_in(url: str, torch_home: str) -> None:
    """A file in the layout of mmdet's model zoo at the hub cache path of
    ``url``: the state dict of mmdet's own model of that name (its config
    from mmdet's package, ``.../retinanet/NAME/FILE.pth`` →
    ``retinanet/NAME.py``), random weights."""
    from mmdet.registry import MODELS
    from mmengine.config import Config

    from tests.test_engine.test_offline_weights import zoo_checkpoint
    folder, name = url.rstrip('/').split('/')[-3:-1]
    cfg = Config.fromfile(
        osp.join(
            osp.dirname(__import__('mmdet').__file__), '.mim', 'configs',
            folder, f'{name}.py'))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    cache = osp.join(torch_home, 'hub', 'checkpoints')
    os.makedirs(cache, exist_ok=True)
    torch.save(
        zoo_checkpoint(cfg, model.state_dict(), layout='2.x'),
        osp.join(cache, osp.basename(url)),
        _use_new_zipfile_serialization=False)


def refusing_proxy() -> str:
    """A proxy address on which nothing listens: any download fails at
    once instead of reaching the network."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return f'http://127.0.0.1:{s.getsockname()[1]}'


@pytest.mark.slow
def test_readme_own_data_steps_run_as_written(tmp_path, monkeypatch):
    text = section(osp.join(ROOT, 'README.md'), 'Your own data')
    steps = commands(text)
    assert any('tools/train.py' in c for c in steps), steps
    work = tmp_path / 'clone'
    work.mkdir()
    for name in ('tools', 'configs', 'projects'):
        os.symlink(osp.join(ROOT, name), work / name)
    monkeypatch.chdir(work)

    python = [lang for lang, _, _ in fences(text) if lang == 'python']
    assert not python, 'the README writes the config with make_config.py'
    assert any(c.startswith('python tools/make_config.py') for c in steps)
    torch_home = str(tmp_path / 'torch')
    staged = set()
    proxy = refusing_proxy()
    env = dict(
        tool_env(cpu=True),
        TORCH_HOME=torch_home,
        # --amp auto caches its probe here, not in the user's cache.
        XDG_CACHE_HOME=str(tmp_path / 'cache'),
        http_proxy=proxy,
        https_proxy=proxy,
        HTTP_PROXY=proxy,
        HTTPS_PROXY=proxy,
        no_proxy='',
        NO_PROXY='')

    for step in steps:
        args = shlex.split(step)
        assert args[0] == 'python', f'not a python command: {step}'
        tool = args[1]
        args = args[1:] + SMALL.get(tool, [])
        paths = named_paths(args)
        missing = [p for p in paths if not osp.exists(p)]
        # The weights a config of an earlier step downloads, staged.
        for path in paths:
            if path.endswith('.py') and not path.startswith('tools/') and \
                    osp.isfile(path) and path not in staged:
                staged.add(path)
                load_from = resolved(path).get('load_from')
                if load_from and '://' in load_from:
                    zoo_stand_in(load_from, torch_home)
        proc = subprocess.run([sys.executable, *args],
                              capture_output=True,
                              text=True,
                              env=env,
                              timeout=600)
        log = (proc.stdout + proc.stderr)[-3000:]
        assert proc.returncode == 0, (
            f'{step}\nexit {proc.returncode}; named but missing before it '
            f'ran: {missing}\n{log}')
        absent = [p for p in missing if not written(p, args)]
        assert not absent, f'{step}\nnames {absent}, never written\n{log}'

    prose = re.sub(r'^```.*?^```', '', text, flags=re.M | re.S)
    for path in re.findall(r'`((?:data|work_dirs|my_configs)/[^`\s]+)`',
                           prose):
        assert osp.exists(path), f'the README names {path}; not written'

    # docs/own_data.md's config by hand is the one step 2 wrote.
    name, code = config_block(
        section(
            osp.join(ROOT, 'docs', 'own_data.md'),
            'End to end, on the example export'))
    assert osp.isfile(name), f'{name}: the README does not write it'
    by_hand = osp.join(osp.dirname(name), 'by_hand.py')
    with open(by_hand, 'w') as f:
        f.write(code)
    assert resolved(by_hand) == resolved(name)


def test_docs_walk_the_readme_path():
    """docs/own_data.md's end-to-end steps are the README's commands, and
    its config by hand (valid Python) is the file step 2 writes (the slow
    test compares them resolved)."""
    readme = section(osp.join(ROOT, 'README.md'), 'Your own data')
    docs = section(
        osp.join(ROOT, 'docs', 'own_data.md'),
        'End to end, on the example export')
    assert commands(docs) == commands(readme)
    name, code = config_block(docs)
    ast.parse(code)
    made = [c for c in commands(readme) if 'tools/make_config.py' in c]
    assert len(made) == 1
    assert f'`{name}`' in readme
    assert osp.splitext(osp.basename(name))[0] == shlex.split(made[0])[2]
