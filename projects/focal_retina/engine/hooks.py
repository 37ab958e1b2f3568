"""Hooks that keep a training run from losing work or loading the wrong
weights silently.

* :class:`NonFiniteGuardHook` — a NaN/Inf loss or gradient is caught
  *before* the optimizer applies it (in front of the optim wrapper's step,
  with or without a loss scaler), so
  the weights, and every checkpoint written so far, stay good. It stops the
  run with a message naming the loss term and iteration, or, when
  configured, skips the step. (mmengine has nothing like it; mmdet's
  ``CheckInvalidLossHook`` runs after the step and only asserts, by which
  time the weights are NaN.)
* :class:`SafeCheckpointHook` — mmengine's ``CheckpointHook``, except that
  with ``max_keep_ckpts`` the oldest checkpoint is deleted *after* the new
  one is written, not before: with ``max_keep_ckpts=1`` mmengine deletes the
  only good checkpoint and then writes the new one, so a kill while saving
  leaves none. (The write itself is made atomic by ``FocalRetinaRunner``.)
  With ``save_best``, it also keeps ``best_<metric>.pth`` (e.g.
  ``best_coco_bbox_mAP.pth``) pointing at mmengine's current
  ``best_<metric>_iter_N.pth``: a name the next command can be given
  before anyone knows N.
* :class:`CheckpointCompatibilityHook` — a ``load_from`` / ``--resume``
  checkpoint whose keys or shapes differ from the model is reported key by
  key and refused, unless the user names the keys that may differ (e.g. the
  classification conv when fine-tuning on another number of classes):
  those are skipped, keep their initialisation (the prior for
  ``retina_cls``) and are listed. mmengine would load the rest and log a
  warning that is easy to miss.
"""
import functools
import os
import os.path as osp
import re
import shutil
from collections import deque
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

DATA_BATCH = Optional[Union[dict, tuple, list]]


class NonFiniteLossError(FloatingPointError):
    """A loss term or gradient became NaN or infinite."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not fit the model."""


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Stops (or skips) a training step whose loss or gradient is not
    finite, before the optimizer changes the weights.

    The check runs in front of the optim wrapper's ``step`` (whatever the
    wrapper), not as an optimizer pre-hook: under ``AmpOptimWrapper`` the
    ``GradScaler`` skips ``optimizer.step()`` when the gradients are not
    finite, so a pre-hook would never see a loss that stays NaN while the
    scale halves at every step.

    With a loss scaler, a non-finite gradient under finite loss terms is the
    scaler's normal overflow (fp16): the scaler skips that step and halves
    its scale; the guard lets it, and stops after ``max_skips`` such steps in
    a row (the scale has then dropped by ``2**max_skips``).

    Args:
        action: ``'stop'`` raises :class:`NonFiniteLossError`; ``'skip'``
            drops the step (the optimizer leaves every parameter unchanged)
            and goes on.
        max_skips: Consecutive skipped steps after which the run stops
            anyway (a run that only skips makes no progress).
    """

    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop', max_skips: int = 10) -> None:
        if action not in ('stop', 'skip'):
            raise ValueError(f"NonFiniteGuardHook: action={action!r}, "
                             "expected 'stop' or 'skip'")
        if max_skips < 1:
            raise ValueError(f'NonFiniteGuardHook: max_skips={max_skips}, '
                             'expected at least 1')
        self.action = action
        self.max_skips = max_skips
        self.skipped = 0
        self._consecutive = 0
        self._losses: Dict[str, torch.Tensor] = {}
        self._wrapped: list = []

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        parse_losses = model.parse_losses

        def recording_parse_losses(losses):
            self._losses = losses  # the terms of this step, by name
            return parse_losses(losses)

        # Attributes of these instances only; nothing global changes.
        model.parse_losses = recording_parse_losses
        for wrapper in self._wrappers(runner):
            self._guard(runner, wrapper)

    def _guard(self, runner, wrapper) -> None:
        step = wrapper.step

        # wraps: keeps the attributes mmengine's param schedulers set on the
        # step they count (``_with_counter``), so they see it unchanged.
        @functools.wraps(step)
        def guarded_step(*args, **kwargs):
            if self._check(runner, wrapper):
                step(*args, **kwargs)

        self._wrapped.append((wrapper, 'step' in vars(wrapper), step))
        wrapper.step = guarded_step

    def after_train(self, runner) -> None:
        for wrapper, own, step in self._wrapped:
            if own:
                wrapper.step = step
            else:
                del wrapper.step
        self._wrapped = []

    @staticmethod
    def _wrappers(runner) -> list:
        wrapper = runner.optim_wrapper
        if hasattr(wrapper, 'optimizer'):
            return [wrapper]
        return list(wrapper.values())  # OptimWrapperDict

    @staticmethod
    def _terms(losses: dict) -> List[torch.Tensor]:
        return [
            v for value in losses.values()
            for v in (value if isinstance(value, (list, tuple)) else [value])
            if torch.is_tensor(v)
        ]

    def _bad_terms(self) -> List[str]:
        bad = []
        for name, value in self._losses.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if torch.is_tensor(v) and not torch.isfinite(v).all():
                    bad.append(f'{name}={v.detach().float().sum().item()}')
                    break
        return bad

    def _check(self, runner, wrapper) -> bool:
        """Whether the wrapper's step may run; raises to stop the run."""
        optimizer = wrapper.optimizer
        grads = [
            p.grad for group in optimizer.param_groups for p in group['params']
            if p.grad is not None
        ]
        if not grads:
            return True
        scaler = getattr(wrapper, 'loss_scaler', None)
        if scaler is not None and not scaler.is_enabled():
            scaler = None
        # One host sync per step: the gradient norm and every loss term are
        # checked in one tensor; the terms are named only on failure. The
        # gradients are still scaled under a loss scaler: the unscaled norm
        # is norm / scale, finite exactly when the scaled one is.
        norm = torch.stack([n.float()
                            for n in torch._foreach_norm(grads)]).sum()
        finite = torch.stack([torch.isfinite(norm)] + [
            torch.isfinite(v).all().to(norm.device)
            for v in self._terms(self._losses)
        ])
        if bool(self._agree(finite.all())):
            self._consecutive = 0
            return True
        bad_terms = self._bad_terms()
        if bad_terms:
            what = f'loss term {", ".join(bad_terms)}'
        elif bool(finite.all()):
            what = 'loss term on another process'
        else:
            what = 'gradient (all loss terms finite)'
        where = f'iteration {runner.iter + 1}'
        overflow = scaler is not None and not bad_terms
        if ((self.action == 'skip' or overflow)
                and self._consecutive < self.max_skips):
            self.skipped += 1
            self._consecutive += 1
            runner.logger.warning(
                f'non-finite {what} at {where}: step skipped '
                f'({self.skipped} so far' +
                (f', loss scale {scaler.get_scale():g}' if scaler else '') +
                ')')
            return self._skip(optimizer, scaler)
        streak = (f' ({self._consecutive} steps in a row before it)'
                  if self._consecutive else '')
        raise NonFiniteLossError(
            f'non-finite {what} at {where}{streak}; the step was not '
            'applied, the '
            f'weights and the checkpoints in {runner.work_dir} are from '
            'before it. Try a lower lr (or a longer warm-up), the prior '
            'initialisation of the classifier (model.bbox_head.prior_prob='
            '0.01), gradient clipping (optim_wrapper.clip_grad=dict('
            'max_norm=35)), or custom_hooks=[dict(type='
            "'NonFiniteGuardHook', action='skip')] to skip such steps.")

    @staticmethod
    def _agree(finite: torch.Tensor) -> torch.Tensor:
        """Whether the step is finite on every process.

        The gradients are all-reduced by DDP, but the loss terms are each
        process's own (a logged term can be NaN on one process only): a
        process deciding alone would stop, or skip, while the others step,
        and the run would hang in the next all-reduce or the replicas
        would drift apart. So the verdict is all-reduced (MIN) first.
        """
        if get_world_size() == 1:
            return finite
        flag = finite.to(torch.int32).reshape(1)
        all_reduce(flag, op='min')
        return flag[0]

    @staticmethod
    def _skip(optimizer: torch.optim.Optimizer, scaler) -> bool:
        if scaler is None:
            # No gradient: the optimizer leaves every parameter unchanged.
            for group in optimizer.param_groups:
                for p in group['params']:
                    p.grad = None
            return True
        # A GradScaler must see this step (it records the inf check that
        # its update() needs): non-finite gradients make it skip
        # optimizer.step() and lower the scale, as for any overflow.
        for group in optimizer.param_groups:
            for p in group['params']:
                if p.grad is not None:
                    p.grad.fill_(float('nan'))
        return True


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that prunes old checkpoints after saving.

    mmengine keeps the ids of the kept checkpoints in a
    ``deque(maxlen=max_keep_ckpts)`` and deletes the oldest file *before*
    writing the new one. This hook owns the list instead: an unbounded deque
    (a bounded one would drop the oldest id on ``append`` without deleting
    its file), the new checkpoint is written first, then every id beyond
    ``max_keep_ckpts`` is deleted. The ids go to the message hub, so a
    ``--resume`` prunes and keeps the same files.

    With ``save_best``, each time mmengine saves a new best checkpoint
    (``best_coco_bbox_mAP_iter_N.pth``, deleting the previous one),
    ``best_coco_bbox_mAP.pth`` next to it is made to point at it (one
    stable name per metric), so a tested and deployed checkpoint is named
    the same whatever iteration won.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._best_linked: Dict[str, str] = {}  # link -> the file it names

    def before_train(self, runner) -> None:
        # mmengine reads the kept ids back from the message hub (and prunes
        # them to max_keep_ckpts); we only lift the deque's bound.
        super().before_train(runner)
        if self.max_keep_ckpts > 0:
            self.keep_ckpt_ids = deque(self.keep_ckpt_ids)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        keep = self.max_keep_ckpts
        if keep <= 0:
            return super()._save_checkpoint_with_step(runner, step, meta)
        # _save_checkpoint and _save_best_checkpoint may save the same step.
        if not self.keep_ckpt_ids or self.keep_ckpt_ids[-1] != step:
            self.keep_ckpt_ids.append(step)
        # The saved message hub lists the previous ids as well: a run killed
        # between this save and the pruning below prunes them on --resume.
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
        self.max_keep_ckpts = 0  # the parent's delete-before-save is off
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            self.max_keep_ckpts = keep
        while len(self.keep_ckpt_ids) > keep:
            self._remove(self.keep_ckpt_ids.popleft())
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        super()._save_best_checkpoint(runner, metrics)
        if not self.save_best or not is_main_process():
            return
        # mmengine keeps one path for one metric, a dict for several; the
        # 'auto' indicator is resolved by now.
        if len(self.key_indicators) == 1:
            bests = {self.key_indicators[0]: self.best_ckpt_path}
        else:
            bests = dict(self.best_ckpt_path_dict)
        for key, target in bests.items():
            # Local files only: a remote backend has no links to make.
            if not target or '://' in str(target) or not osp.isfile(target):
                continue
            link = osp.join(
                osp.dirname(target), f"best_{key.replace('/', '_')}.pth")
            if self._best_linked.get(link) == target and osp.exists(link):
                continue
            how = point_to(link, target)
            self._best_linked[link] = target
            runner.logger.info(
                f'{osp.basename(link)} {how} {osp.basename(target)}, the '
                'best checkpoint so far (the name to test and deploy)')

    def _remove(self, step: int) -> None:
        if not is_main_process():
            return
        path = self.file_backend.join_path(self.out_dir,
                                           self.filename_tmpl.format(step))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed saves directories
            self.file_backend.rmtree(path)


def point_to(link: str, target: str) -> str:
    """Makes the path ``link`` name the file ``target`` of the same folder.

    A relative symlink (so the folder can be moved or copied with its
    links), or a copy where the filesystem or OS does not allow symlinks
    (Windows without the privilege). The new entry replaces the old one in
    one ``os.replace``, so ``link`` never names a half-written file.

    Returns:
        str: 'links to' or 'is a copy of', for the log.
    """
    tmp = link + '.tmp'
    if osp.lexists(tmp):
        os.remove(tmp)
    try:
        os.symlink(osp.basename(target), tmp)
        how = 'links to'
    except OSError:
        shutil.copyfile(target, tmp)
        how = 'is a copy of'
    os.replace(tmp, link)
    return how


def checkpoint_mismatch(model: torch.nn.Module,
                        checkpoint: dict) -> Tuple[dict, list, list]:
    """What does not fit: ({key: (checkpoint shape, model shape)}, keys
    missing from the checkpoint, checkpoint keys the model lacks)."""
    state = checkpoint.get('state_dict', checkpoint)
    # mmengine strips a DDP 'module.' prefix the same way when loading.
    ckpt = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    own = model.state_dict()
    shape = {
        k: (tuple(v.shape), tuple(own[k].shape))
        for k, v in ckpt.items() if k in own and torch.is_tensor(v)
        and tuple(v.shape) != tuple(own[k].shape)
    }
    missing = [k for k in own if k not in ckpt]
    unexpected = [k for k in ckpt if k not in own]
    return shape, missing, unexpected


def check_fit(model: torch.nn.Module, checkpoint: dict) -> None:
    """:class:`CheckpointMismatchError` (one line) unless ``checkpoint``
    fits ``model`` key for key and shape for shape (inference: mmdet's
    ``DetInferencer`` loads what matches and only warns)."""
    shape, missing, unexpected = checkpoint_mismatch(model, checkpoint)
    refused = list(shape) + missing + unexpected
    if refused:
        raise CheckpointMismatchError(
            CheckpointCompatibilityHook._report(shape, missing, unexpected,
                                                refused))


@HOOKS.register_module()
class CheckpointCompatibilityHook(Hook):
    """Refuses, with a key-by-key report, a checkpoint that does not fit
    the model, except for the keys the user allows to differ.

    Args:
        allow_mismatch: Regular expressions (matched at the start of a key
            of the model's state dict); matching keys that are missing from
            the checkpoint or have another shape there are skipped and keep
            their initialisation. ``True`` allows every key. Default: none.
        allow_unexpected: Whether keys the model does not have may be in
            the checkpoint (ignored when loading). Default: False.

    Both opt-ins hold for ``load_from`` while training; ``--resume`` (which
    restores the optimizer state too), testing and inference need a
    checkpoint that fits.
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 allow_mismatch: Union[bool, Sequence[str]] = (),
                 allow_unexpected: bool = False) -> None:
        if isinstance(allow_mismatch, str):
            allow_mismatch = [allow_mismatch]
        self.allow_all = allow_mismatch is True
        self.patterns = [] if isinstance(
            allow_mismatch, bool) else [re.compile(p) for p in allow_mismatch]
        self.allow_unexpected = allow_unexpected
        self.skipped: List[str] = []

    def _allowed(self, key: str) -> bool:
        return self.allow_all or any(p.match(key) for p in self.patterns)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        state = checkpoint.get('state_dict', checkpoint)
        shape, missing, unexpected = checkpoint_mismatch(model, checkpoint)
        # Testing a model whose classifier kept its initialisation would
        # report a meaningless AP: the opt-in holds for training only.
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        # A resumed run also restores the optimizer, whose state (momentum)
        # has the checkpoint's shapes: skipping a weight would fail at the
        # first step, so --resume needs a complete fit.
        resuming = bool(getattr(runner, '_resume', False))
        allowing = training and not resuming
        refused = [
            k for k in list(shape) + missing
            if not (allowing and self._allowed(k))
        ]
        if unexpected and not (allowing and self.allow_unexpected):
            refused += unexpected
        if refused:
            report = self._report(shape, missing, unexpected, refused)
            if len(refused) > 3:
                runner.logger.error(
                    'checkpoint keys that do not fit:\n' +
                    '\n'.join('  ' + self._describe(k, shape, missing)
                              for k in refused))
            if resuming:
                report = (
                    '--resume needs a checkpoint that fits the model '
                    'exactly (the optimizer state is restored with it); '
                    'allow_mismatch applies to load_from only: fine-tune '
                    'with load_from=CHECKPOINT and no --resume. ' + report)
            raise CheckpointMismatchError(report)
        self.skipped = sorted(list(shape) + missing)
        for key in shape:  # skipped: they keep their initialisation
            state.pop(key, None)
            state.pop(f'module.{key}', None)
        if self.skipped or unexpected:
            runner.logger.warning(
                'checkpoint loaded except for these model keys, which keep '
                'their initialisation: ' +
                ', '.join(f'{k} {shape[k][0]}->{shape[k][1]}' if k in
                          shape else f'{k} (not in checkpoint)'
                          for k in self.skipped) +
                (f'; ignored checkpoint keys: {", ".join(unexpected)}'
                 if unexpected else ''))

    @staticmethod
    def _describe(key: str, shape: dict, missing: list) -> str:
        if key in shape:
            return f'{key}: checkpoint {shape[key][0]}, model {shape[key][1]}'
        if key in missing:
            return f'{key}: not in the checkpoint'
        return f'{key}: not in the model'

    @classmethod
    def _report(cls,
                shape: dict,
                missing: list,
                unexpected: list,
                refused: list,
                shown: int = 3) -> str:
        """One line: the counts, the first ``shown`` keys, the likely cause
        (the full list, when longer, goes to the log)."""
        kinds = [(sum(k in shape for k in refused), 'of another shape'),
                 (sum(k in missing for k in refused), 'not in the checkpoint'),
                 (sum(k in unexpected for k in refused), 'not in the model')]
        counts = ', '.join(f'{n} {what}' for n, what in kinds if n)
        keys = '; '.join(
            cls._describe(k, shape, missing) for k in refused[:shown])
        more = (f'; and {len(refused) - shown} more (all in the log)'
                if len(refused) > shown else '')
        classes = all('retina_cls' in k for k in refused)
        hint = ('another number of classes: to fine-tune, allow the '
                "classifier with custom_hooks=[dict(type='Checkpoint"
                "CompatibilityHook', allow_mismatch=['bbox_head.retina_cls'"
                '])]' if classes else 'another architecture: check '
                'load_from (mmdet\'s published weights go with '
                'configs/pretrained/), or allow the keys with '
                'CheckpointCompatibilityHook(allow_mismatch=[...], '
                'allow_unexpected=True)')
        return (f'the checkpoint does not fit the model, {len(refused)} '
                f'key(s) differ ({counts}): {keys}{more} (likely {hint})')
