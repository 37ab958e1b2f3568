"""Checks that a documented command would start, without running it.

A command of the README, the docs or the generated paper table is checked
the way a user would first meet it: the script exists, its own argparse
accepts the arguments (the script is run up to its ``parse_args`` call and
stopped there), every config it names exists and loads with
``Config.fromfile``, and a ``--test-dev NAME`` passes the evaluation
server's name check. ``bash tools/dist_train.sh CONFIG GPUS [args]`` and
the other launchers are checked as the ``tools/*.py`` command they start.
"""
import argparse
import contextlib
import io
import os
import os.path as osp
import runpy
import shlex
import sys
from typing import List, Optional, Tuple
from unittest import mock

ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

# launcher -> (python script it starts, number of its own leading arguments
# that are passed on to the script, number of leading arguments it eats)
LAUNCHERS = {
    'tools/dist_train.sh': ('tools/train.py', 1, 2),
    'tools/dist_test.sh': ('tools/test.py', 2, 3),
    'tools/slurm_train.sh': ('tools/train.py', 1, 4),
}
PYTHONS = ('python', 'python3', '.venv/bin/python')


class _Parsed(Exception):
    """Raised in place of returning from the script's ``parse_args``."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.namespace = namespace


def parse_script_args(script: str,
                      argv: List[str]) -> Optional[argparse.Namespace]:
    """The namespace ``script``'s own argparse makes of ``argv``.

    The script runs as ``__main__`` until its first ``parse_args`` /
    ``parse_known_args`` returns, and is stopped there: nothing after the
    argument parsing executes. ``--help`` gives None.

    Raises:
        ValueError: argparse refused the arguments (its message), or the
            script never parsed any.
    """
    real_parse = argparse.ArgumentParser.parse_known_args

    def parse_and_stop(parser, args=None, namespace=None):
        namespace, extra = real_parse(parser, args, namespace)
        if extra and not getattr(parser, '_known_only', False):
            parser.error(f'unrecognized arguments: {" ".join(extra)}')
        raise _Parsed(namespace)

    def parse_known_and_stop(parser, args=None, namespace=None):
        parser._known_only = True
        return parse_and_stop(parser, args, namespace)

    out = io.StringIO()
    saved_argv, saved_path = sys.argv, list(sys.path)
    saved_env = dict(os.environ)
    sys.argv = [script] + list(argv)
    try:
        with mock.patch.object(argparse.ArgumentParser, 'parse_args',
                               parse_and_stop), \
                mock.patch.object(argparse.ArgumentParser,
                                  'parse_known_args', parse_known_and_stop), \
                contextlib.redirect_stderr(out), \
                contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name='__main__')
    except _Parsed as parsed:
        return parsed.namespace
    except SystemExit as exc:
        if exc.code in (0, None):
            return None  # --help
        lines = out.getvalue().strip().splitlines()
        raise ValueError(lines[-1] if lines else f'exit status {exc.code}')
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.environ.clear()
        os.environ.update(saved_env)
    raise ValueError(f'{script} returned without parsing its arguments')


def _split(command: str) -> Tuple[Optional[str], List[str]]:
    """(script path relative to the repository, its arguments)."""
    tokens = shlex.split(command, comments=True)
    while tokens and '=' in tokens[0] and not tokens[0].startswith('-'):
        tokens = tokens[1:]  # VAR=value prefixes
    if tokens and (tokens[0] in PYTHONS or tokens[0] == 'bash'):
        tokens = tokens[1:]
    if not tokens:
        return None, []
    return tokens[0], tokens[1:]


def check_command(command: str, root: str = ROOT) -> List[str]:
    """What is wrong with ``command`` (empty when it would start).

    Args:
        command: One shell command line (``python tools/...``, ``bash
            tools/...``), run from the repository root.
        root: The repository root.

    Returns:
        One message per problem, each naming the command's part at fault.
    """
    script, args = _split(command)
    if script is None:
        return [f'{command!r}: no command']
    problems = []
    if not osp.isfile(osp.join(root, script)):
        return [f'{script}: no such script']
    if script in LAUNCHERS:
        target, passed, eaten = LAUNCHERS[script]
        if len(args) < eaten:
            return [f'{script}: expected at least {eaten} arguments']
        if script.endswith('slurm_train.sh'):
            args = args[2:3] + ['--work-dir', args[3]] + args[eaten:]
        else:
            args = args[:passed] + args[eaten:]
        script = target
    if not script.endswith('.py'):
        return problems
    try:
        namespace = parse_script_args(osp.join(root, script), args)
    except ValueError as exc:
        return [f'{script} {" ".join(args)}: {exc}']
    if namespace is None:
        return problems
    problems += _check_namespace(script, namespace, root)
    return problems


def _check_namespace(script: str, namespace: argparse.Namespace,
                     root: str) -> List[str]:
    from projects.focal_retina.engine.cli import read_config
    from projects.focal_retina.evaluation.testdev import \
        submission_name_problem
    problems = []
    config = getattr(namespace, 'config', None)
    if isinstance(config, str) and config.endswith('.py'):
        path = osp.join(root, config)
        if not osp.isfile(path):
            problems.append(f'{script}: config {config} does not exist')
        else:
            try:
                read_config(path)
            except Exception as exc:  # a config is code: any error
                problems.append(f'{script}: config {config} does not load: '
                                f'{type(exc).__name__}: {exc}')
    name = getattr(namespace, 'test_dev', None)
    if name is not None:
        problem = submission_name_problem(name)
        if problem:
            problems.append(f'{script}: {problem}')
    return problems
