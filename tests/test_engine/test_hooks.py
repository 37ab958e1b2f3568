"""Training never loses work: the NaN guard, atomic checkpoints saved before
the old one is pruned, and refused partial loads — each with mmengine's own
Runner and CheckpointHook on a toy model, pinned to the CPU."""
import glob
import os
import os.path as osp
import warnings
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn
from mmengine.fileio.backends import LocalBackend
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner import Runner

from projects.focal_retina.engine import (CheckpointMismatchError,
                                          FocalRetinaRunner,
                                          NonFiniteLossError, safe_load)

DEVICE = 'cpu'


class Toy(BaseModel):
    """Two losses; ``nan_at`` / ``nan_grad_at``: the 1-based iteration at
    which loss_cls becomes NaN, or the gradient becomes NaN with every loss
    term finite."""

    def __init__(self, nan_at=None, nan_grad_at=None, num_classes=3):
        super().__init__()
        torch.manual_seed(0)  # every Toy starts from the same weights
        self.backbone = nn.Linear(2, 4)
        self.bbox_head = nn.Module()
        self.bbox_head.retina_cls = nn.Linear(4, num_classes)
        self.nan_at, self.nan_grad_at, self.calls = nan_at, nan_grad_at, 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.calls += 1
        feat = self.backbone(inputs.to(DEVICE))
        out = self.bbox_head.retina_cls(feat)
        loss_cls = out.pow(2).mean()
        loss_bbox = feat.pow(2).mean()
        if self.calls == self.nan_at:
            loss_cls = loss_cls * float('nan')
        if self.calls == self.nan_grad_at:
            # sqrt at 0: the value is 0, its gradient 0 * inf = NaN.
            loss_bbox = loss_bbox + (feat * 0).sum().sqrt()
        if mode == 'loss':
            return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)
        return out


DATA = [dict(inputs=torch.tensor([1.0, float(i)])) for i in range(8)]
RUNS = iter(range(10**6))  # a fresh experiment name (message hub) per run


def make_runner(work_dir,
                model,
                max_iters=4,
                interval=1,
                max_keep=-1,
                custom_hooks=None,
                load_from=None,
                resume=False,
                cls=FocalRetinaRunner,
                checkpoint_type='SafeCheckpointHook',
                **kwargs):
    torch.manual_seed(0)
    return cls(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=DATA,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=10**6),
            checkpoint=dict(
                type=checkpoint_type,
                interval=interval,
                by_epoch=False,
                max_keep_ckpts=max_keep)),
        custom_hooks=custom_hooks
        if custom_hooks is not None else [dict(type='NonFiniteGuardHook')],
        load_from=load_from,
        resume=resume,
        experiment_name=f'hooks_{next(RUNS)}',
        **kwargs)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def saved(path):
    return safe_load(str(path), map_location='cpu')['state_dict']


def test_nan_loss_stops_before_the_step(tmp_path):
    runner = make_runner(tmp_path, Toy(nan_at=3))
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    msg = str(err.value)
    assert 'loss term loss_cls=nan' in msg and 'iteration 3' in msg
    assert 'lower lr' in msg and 'prior' in msg and 'clip_grad' in msg
    # The NaN step was not applied: the weights are those of iteration 2,
    # which are the last checkpoint's, and no checkpoint 3 was written.
    assert all(torch.isfinite(v).all() for v in params(runner.model).values())
    ckpt2 = saved(tmp_path / 'iter_2.pth')
    for k, v in params(runner.model).items():
        assert torch.equal(v, ckpt2[k]), k
    assert not (tmp_path / 'iter_3.pth').exists()


def test_nan_gradient_with_finite_losses_is_caught(tmp_path):
    runner = make_runner(tmp_path, Toy(nan_grad_at=2))
    with pytest.raises(
            NonFiniteLossError,
            match=r'gradient \(all loss terms finite\) at '
            'iteration 2'):
        runner.train()
    assert all(torch.isfinite(v).all() for v in params(runner.model).values())


def test_skip_drops_the_step_and_goes_on(tmp_path):
    hook = dict(type='NonFiniteGuardHook', action='skip')
    ref = make_runner(tmp_path / 'ref', Toy(), max_iters=2)
    ref.train()
    runner = make_runner(
        tmp_path / 'skip', Toy(nan_at=3), max_iters=3, custom_hooks=[hook])
    runner.train()  # finishes
    guard = [
        h for h in runner.hooks if type(h).__name__ == 'NonFiniteGuardHook'
    ][0]
    assert guard.skipped == 1
    # Step 3 skipped: SGD leaves parameters without gradient unchanged
    # (momentum included), so the weights equal those after 2 steps.
    for k, v in params(runner.model).items():
        assert torch.equal(v, params(ref.model)[k]), k


def test_skip_gives_up_after_max_skips(tmp_path):

    class AlwaysNaN(Toy):

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            if isinstance(out, dict):
                out['loss_cls'] = out['loss_cls'] * float('nan')
            return out

    hook = dict(type='NonFiniteGuardHook', action='skip', max_skips=2)
    runner = make_runner(tmp_path, AlwaysNaN(), custom_hooks=[hook])
    with pytest.raises(NonFiniteLossError, match='iteration 3'):
        runner.train()


@pytest.mark.parametrize('bad,match', [
    (dict(action='ignore'), "action='ignore'"),
    (dict(max_skips=0), 'max_skips=0'),
])
def test_guard_settings_are_validated(bad, match):
    from projects.focal_retina.engine import NonFiniteGuardHook
    with pytest.raises(ValueError, match=match):
        NonFiniteGuardHook(**bad)


def interrupt_put_of(name):
    """A LocalBackend.put that writes half of ``name`` and is then killed
    (KeyboardInterrupt); other files are written normally."""
    real_put = LocalBackend.put

    def put(self, obj, filepath):
        if osp.basename(str(filepath)).startswith(name):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise KeyboardInterrupt
        return real_put(self, obj, filepath)

    return put


@pytest.mark.parametrize('max_keep', [1, 3])
def test_interrupted_save_keeps_the_previous_checkpoint(
        tmp_path, monkeypatch, max_keep):
    runner = make_runner(
        tmp_path, Toy(), max_iters=4, interval=2, max_keep=max_keep)
    monkeypatch.setattr(LocalBackend, 'put', interrupt_put_of('iter_4.pth'))
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    monkeypatch.undo()
    # No partial file under either name; the previous checkpoint is whole
    # and still named by last_checkpoint.
    assert sorted(p for p in os.listdir(tmp_path)
                  if p.startswith('iter_')) == ['iter_2.pth']
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read().endswith('iter_2.pth')
    saved(tmp_path / 'iter_2.pth')  # loads
    # --resume (auto) picks it up and finishes.
    resumed = make_runner(
        tmp_path,
        Toy(),
        max_iters=4,
        interval=2,
        max_keep=max_keep,
        resume=True)
    resumed.train()
    assert resumed.iter == 4
    ref = make_runner(tmp_path / 'ref', Toy(), max_iters=4, interval=2)
    ref.train()
    for k, v in params(resumed.model).items():
        assert torch.equal(v, params(ref.model)[k]), k


def test_stock_runner_loses_the_checkpoint(tmp_path, monkeypatch):
    """What the atomic save prevents: mmengine's own Runner and hook leave
    a truncated iter_4.pth, named by last_checkpoint, and with
    max_keep_ckpts=1 have already deleted iter_2.pth."""
    runner = make_runner(
        tmp_path,
        Toy(),
        max_iters=4,
        interval=2,
        max_keep=1,
        cls=Runner,
        checkpoint_type='CheckpointHook')
    monkeypatch.setattr(LocalBackend, 'put', interrupt_put_of('iter_4.pth'))
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    assert not (tmp_path / 'iter_2.pth').exists()
    assert (tmp_path / 'iter_4.pth').exists()
    with pytest.raises(Exception):
        saved(tmp_path / 'iter_4.pth')


def write_checkpoint(path, model):
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)


def test_mismatched_checkpoint_is_refused_with_a_report(tmp_path):
    src = Toy(num_classes=5)
    write_checkpoint(tmp_path / 'other.pth', src)
    runner = make_runner(
        tmp_path / 'run',
        Toy(num_classes=3),
        load_from=str(tmp_path / 'other.pth'),
        custom_hooks=[dict(type='CheckpointCompatibilityHook')])
    with pytest.raises(CheckpointMismatchError) as err:
        runner.train()
    msg = str(err.value)
    assert 'bbox_head.retina_cls.weight: checkpoint (5, 4), model (3, 4)' \
        in msg
    assert 'bbox_head.retina_cls.bias: checkpoint (5,), model (3,)' in msg
    assert "allow_mismatch=['bbox_head.retina_cls']" in msg
    assert 'backbone' not in msg


def test_allowed_keys_are_skipped_and_keep_their_init(tmp_path):
    src = Toy(num_classes=5)
    with torch.no_grad():
        src.backbone.weight.fill_(0.25)
    write_checkpoint(tmp_path / 'other.pth', src)
    model = Toy(num_classes=3)
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(-4.595)  # the prior's bias
    hook = dict(
        type='CheckpointCompatibilityHook',
        allow_mismatch=['bbox_head.retina_cls'])
    runner = make_runner(
        tmp_path / 'run',
        model,
        max_iters=0,
        load_from=str(tmp_path / 'other.pth'),
        custom_hooks=[hook])
    runner.train()  # loads, then 0 iterations
    guard = [
        h for h in runner.hooks
        if type(h).__name__ == 'CheckpointCompatibilityHook'
    ][0]
    assert guard.skipped == [
        'bbox_head.retina_cls.bias', 'bbox_head.retina_cls.weight'
    ]
    assert torch.equal(runner.model.backbone.weight, torch.full((4, 2), 0.25))
    assert torch.allclose(runner.model.bbox_head.retina_cls.bias,
                          torch.full((3, ), -4.595))


def test_allowed_mismatch_is_refused_outside_training(tmp_path):
    """Testing a model whose classifier kept its initialisation would give
    a meaningless AP: the opt-in holds for training only."""
    write_checkpoint(tmp_path / 'other.pth', Toy(num_classes=5))
    hook = dict(
        type='CheckpointCompatibilityHook',
        allow_mismatch=['bbox_head.retina_cls'])
    runner = make_runner(
        tmp_path / 'run',
        Toy(num_classes=3),
        load_from=str(tmp_path / 'other.pth'),
        custom_hooks=[hook])
    with pytest.raises(CheckpointMismatchError, match='retina_cls.weight'):
        runner.load_or_resume()  # as runner.test() does


def test_another_architecture_is_refused(tmp_path):
    torch.save(
        dict(state_dict={'conv1.weight': torch.zeros(3)}),
        tmp_path / 'other.pth')
    runner = make_runner(
        tmp_path / 'run',
        Toy(),
        load_from=str(tmp_path / 'other.pth'),
        custom_hooks=[dict(type='CheckpointCompatibilityHook')])
    with pytest.raises(CheckpointMismatchError) as err:
        runner.train()
    msg = str(err.value)
    # One line (the tools print it after "error:"); the whole list is in
    # the log.
    assert '\n' not in msg
    assert '5 key(s) differ (4 not in the checkpoint, 1 not in the model)' \
        in msg
    assert 'backbone.weight: not in the checkpoint' in msg
    assert 'and 2 more (all in the log)' in msg
    assert 'another architecture' in msg and 'configs/pretrained/' in msg
    logs = glob.glob(str(tmp_path / 'run' / '*' / '*.log'))
    assert 'conv1.weight: not in the model' in open(logs[0]).read()


def test_matching_checkpoint_loads_silently(tmp_path):
    src = Toy()
    write_checkpoint(tmp_path / 'same.pth', src)
    runner = make_runner(
        tmp_path / 'run',
        Toy(),
        max_iters=0,
        load_from=str(tmp_path / 'same.pth'),
        custom_hooks=[dict(type='CheckpointCompatibilityHook')])
    runner.load_or_resume()
    for k, v in src.state_dict().items():
        assert torch.equal(runner.model.state_dict()[k], v)


def test_train_cli_adds_the_guards_unless_configured():
    from mmengine.config import Config

    from projects.focal_retina.engine.cli import add_safety_hooks
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook')]))
    add_safety_hooks(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == [
        'EMAHook', 'NonFiniteGuardHook', 'CheckpointCompatibilityHook'
    ]
    own = dict(type='NonFiniteGuardHook', action='skip')
    cfg = Config(dict(custom_hooks=[own]))
    add_safety_hooks(cfg)
    assert cfg.custom_hooks[0] == own and len(cfg.custom_hooks) == 2


def test_resume_finds_the_last_complete_checkpoint(tmp_path):
    """--resume without a path: last_checkpoint when it names a file; an
    empty or stale one (a kill while it was written) falls back to the
    highest complete iter_N.pth, never a .part."""
    from projects.focal_retina.engine.cli import latest_checkpoint
    assert latest_checkpoint(str(tmp_path)) is None
    for name in ('iter_2.pth', 'iter_10.pth', 'iter_12.pth.part'):
        (tmp_path / name).write_bytes(b'x')
    marker = tmp_path / 'last_checkpoint'
    marker.write_text(str(tmp_path / 'iter_2.pth'))
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    for stale in ('', str(tmp_path / 'iter_12.pth')):
        marker.write_text(stale)
        assert latest_checkpoint(str(tmp_path)) == str(tmp_path /
                                                       'iter_10.pth')


def kept(work_dir):
    names = [p for p in os.listdir(work_dir) if p.startswith('iter_')]
    return sorted(names, key=lambda n: int(n[5:].split('.')[0]))


@pytest.mark.parametrize('keep', [1, 2, 3])
def test_old_checkpoints_are_pruned_across_a_resume(tmp_path, keep):
    """max_keep_ckpts=keep over 8 saves, resumed after the 4th: the files
    left are the last `keep`, as mmengine's own CheckpointHook leaves them
    (its deletion is before the save, ours after)."""
    expected_4 = [f'iter_{i}.pth' for i in range(5 - keep, 5)]
    expected_8 = [f'iter_{i}.pth' for i in range(9 - keep, 9)]
    runner = make_runner(tmp_path, Toy(), max_iters=4, max_keep=keep)
    runner.train()
    assert kept(tmp_path) == expected_4
    # --resume: the kept ids come back from the checkpoint's message hub.
    resumed = make_runner(
        tmp_path, Toy(), max_iters=8, max_keep=keep, resume=True)
    resumed.train()
    assert resumed.iter == 8
    assert kept(tmp_path) == expected_8
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read().endswith('iter_8.pth')
    saved(tmp_path / 'iter_8.pth')  # whole
    # The same runs with mmengine's Runner and CheckpointHook.
    stock = tmp_path / 'stock'
    for max_iters, resume in ((4, False), (8, True)):
        make_runner(
            stock,
            Toy(),
            max_iters=max_iters,
            max_keep=keep,
            resume=resume,
            cls=Runner,
            checkpoint_type='CheckpointHook').train()
    assert kept(stock) == expected_8


def test_unbounded_keep_deletes_nothing(tmp_path):
    make_runner(tmp_path, Toy(), max_iters=6, max_keep=-1).train()
    assert kept(tmp_path) == [f'iter_{i}.pth' for i in range(1, 7)]


class CPUScaledOptimWrapper(AmpOptimWrapper):
    """mmengine's AmpOptimWrapper (its backward, step and state dict) with
    a CPU GradScaler: what `--amp` runs on CUDA, without a GPU. The scale is
    2**16 as torch's default; the forward is not autocast."""

    def __init__(self, optimizer, **kwargs):
        OptimWrapper.__init__(self, optimizer, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu')

    @contextmanager
    def optim_context(self, model):
        with OptimWrapper.optim_context(self, model):
            yield


def make_scaled_runner(work_dir, model, max_iters=4, action='stop'):
    runner = make_runner(
        work_dir,
        model,
        max_iters=max_iters,
        custom_hooks=[dict(type='NonFiniteGuardHook', action=action)])
    optimizer = torch.optim.SGD(runner.model.parameters(), lr=0.01)
    runner.optim_wrapper = CPUScaledOptimWrapper(optimizer)
    return runner


class AlwaysNaN(Toy):

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = super().forward(inputs, data_samples, mode)
        if mode == 'loss':
            out['loss_cls'] = out['loss_cls'] * float('nan')
        return out


def test_nan_loss_stops_under_a_grad_scaler(tmp_path):
    """Under a GradScaler, a NaN gradient makes the scaler skip
    optimizer.step(): an optimizer pre-hook never runs and the run goes on,
    its scale halving. The guard stops it at the first step."""
    runner = make_scaled_runner(tmp_path, AlwaysNaN())
    before = params(runner.model)
    with pytest.raises(NonFiniteLossError, match='loss_cls=nan.*iteration 1'):
        runner.train()
    assert runner.optim_wrapper.loss_scaler.get_scale() == 2.0**16
    for k, v in params(runner.model).items():
        assert torch.equal(v, before[k]), k


def test_gradient_overflow_under_a_scaler_is_skipped_then_stopped(
        tmp_path):
    """Finite losses with non-finite gradients under a scaler: the scaler's
    overflow skip (the scale halves), tolerated max_skips times in a row."""
    runner = make_scaled_runner(tmp_path, Toy(nan_grad_at=2), max_iters=4)
    runner.train()
    hook = [h for h in runner.hooks if type(h).__name__ ==
            'NonFiniteGuardHook'][0]
    assert runner.iter == 4 and hook.skipped == 1
    assert runner.optim_wrapper.loss_scaler.get_scale() == 2.0**15

    class GradAlwaysNaN(Toy):

        def forward(self, inputs, data_samples=None, mode='tensor'):
            self.nan_grad_at = self.calls + 1
            return super().forward(inputs, data_samples, mode)

    runner = make_scaled_runner(
        tmp_path / 'b', GradAlwaysNaN(), max_iters=20)
    with pytest.raises(NonFiniteLossError, match='10 steps in a row'):
        runner.train()
    assert runner.iter == 10  # stopped at iteration 11


def test_skip_under_a_scaler_leaves_the_weights(tmp_path):
    runner = make_scaled_runner(
        tmp_path, Toy(nan_at=1), max_iters=1, action='skip')
    before = params(runner.model)
    runner.train()
    for k, v in params(runner.model).items():
        assert torch.equal(v, before[k]), k


def test_resume_refuses_a_partial_fit(tmp_path):
    """allow_mismatch would drop retina_cls but the optimizer state keeps
    the checkpoint's shapes: a resume must refuse it in one line."""
    src = make_runner(
        tmp_path / 'src', Toy(num_classes=5), max_iters=2, max_keep=1)
    src.train()
    hooks = [
        dict(
            type='CheckpointCompatibilityHook',
            allow_mismatch=['bbox_head.retina_cls'])
    ]
    runner = make_runner(
        tmp_path / 'dst',
        Toy(num_classes=3),
        max_iters=4,
        custom_hooks=hooks,
        load_from=str(tmp_path / 'src' / 'iter_2.pth'),
        resume=True)
    with pytest.raises(CheckpointMismatchError) as err:
        runner.train()
    first = str(err.value).splitlines()[0]
    assert '--resume needs a checkpoint that fits' in first
    assert 'load_from' in first
    # The same file as load_from (fine-tuning) still loads.
    runner = make_runner(
        tmp_path / 'ft',
        Toy(num_classes=3),
        max_iters=1,
        custom_hooks=hooks,
        load_from=str(tmp_path / 'src' / 'iter_2.pth'))
    runner.train()


def test_guard_keeps_the_lr_schedule_counting(tmp_path):
    """The guard wraps the optim wrapper's step, which mmengine's param
    schedulers have already wrapped with their step counter: the schedule
    still sees its counter (no "optimizer.step() has been overridden"
    warning) and steps the lr at the milestone."""
    runner = make_runner(
        tmp_path,
        Toy(),
        max_iters=4,
        param_scheduler=dict(
            type='MultiStepLR', milestones=[2], gamma=0.1, by_epoch=False))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        runner.train()
    assert not [w for w in seen if 'overridden' in str(w.message)]
    lr = runner.optim_wrapper.get_lr()['lr'][0]
    assert lr == pytest.approx(0.001)
