"""Safe loading of checkpoints: what loads, and every refused attack path.

Attack files are loaded through mmengine's ``CheckpointLoader`` (what the
Runner's ``load_from`` / ``--resume`` and DetInferencer call). Each payload
would create a marker file or change a class of this process if it ran;
the tests check that it did not, not only that an error was raised.
"""
import collections
import copyreg
import dataclasses
import functools
import http.server
import io
import os
import pickle
import threading
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import checkpoint as mm_ckpt
from mmengine.runner.checkpoint import (CheckpointLoader, _load_checkpoint,
                                        save_checkpoint)

from projects.focal_retina.engine import (UntrustedCheckpointError,
                                          allow_checkpoint_globals, safe_load)
from projects.focal_retina.engine.checkpoint import TRUST_ENV


def load_as_runner(path: str):
    """What Runner.load_checkpoint / resume call for a local or URL path."""
    return CheckpointLoader.load_checkpoint(path, map_location='cpu')


def runner_style_checkpoint() -> dict:
    hub = MessageHub.get_instance('test_checkpoint')
    for i in range(3):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
    hub.update_info('iter', 5)
    hub.update_info('np_value', np.float64(0.5))
    model = torch.nn.Conv2d(3, 4, 3)
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 3, 8, 8)).sum().backward()
    optim.step()
    return dict(
        meta=dict(
            iter=5,
            seed=0,
            cfg='model = dict()',
            dataset_meta=dict(classes=('a', 'b'), palette=[(1, 2, 3)]),
            arr=np.arange(6, dtype=np.int64).reshape(2, 3),
            np_int=np.int32(7),
            np_bool=np.bool_(True)),
        state_dict=model.state_dict(),
        optimizer=optim.state_dict(),
        message_hub=hub.state_dict(),
        param_schedulers=[dict(milestones={60: 1}, last_epoch=5)])


def test_loads_runner_checkpoint_through_mmengine(tmp_path):
    ckpt = runner_style_checkpoint()
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint(ckpt, path)
    methods_before = dict(HistoryBuffer._statistics_methods)
    # the plain torch default (weights_only) refuses this file ...
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    # ... mmengine's loader, which we replaced, loads it
    loaded = _load_checkpoint(path, map_location='cpu')
    torch.testing.assert_close(loaded['state_dict'], ckpt['state_dict'])
    assert loaded['optimizer']['state'][0]['momentum_buffer'].shape == \
        (4, 3, 3, 3)
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert type(buf) is HistoryBuffer  # not the stand-in used while loading
    assert buf.current() == pytest.approx(1 / 3)
    assert buf.min() == pytest.approx(1 / 3)
    assert buf.statistics('mean') == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    np.testing.assert_array_equal(loaded['meta']['arr'], ckpt['meta']['arr'])
    assert loaded['meta']['np_int'] == 7 and loaded['meta']['np_bool']
    assert loaded['meta']['dataset_meta']['classes'] == ('a', 'b')
    assert loaded['message_hub']['runtime_info']['np_value'] == 0.5
    assert HistoryBuffer._statistics_methods == methods_before
    # a message hub restores from it as the Runner does on --resume
    hub = MessageHub.get_instance('test_checkpoint_resumed')
    hub.load_state_dict(loaded['message_hub'])
    assert hub.get_scalar('train/loss').current() == pytest.approx(1 / 3)


@pytest.mark.parametrize('new_zipfile', [True, False])
def test_loads_torchvision_style_state_dict(tmp_path, new_zipfile):
    """An ImageNet state dict: torchvision's files are legacy-format."""
    state = OrderedDict(
        (k, v) for k, v in torch.nn.BatchNorm2d(3).state_dict().items())
    path = str(tmp_path / 'resnet.pth')
    torch.save(state, path, _use_new_zipfile_serialization=new_zipfile)
    loaded = load_as_runner(path)
    assert isinstance(loaded, OrderedDict)
    torch.testing.assert_close(dict(loaded), dict(state))


def test_real_runner_checkpoint_resumes(tmp_path):
    """A checkpoint written by mmengine's Runner resumes through our path."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.lin(inputs)
            return dict(loss=out.pow(2).mean()) if mode == 'loss' else out

    from mmengine.hooks import Hook

    class CountIters(Hook):
        """The iterations this Runner ran itself (not restored ones)."""

        def __init__(self):
            self.iters = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.iters.append(runner.iter)

    data = [dict(inputs=torch.tensor([1.0, float(i)])) for i in range(8)]

    def runner(work_dir, max_iters, resume):
        torch.manual_seed(0)
        return Runner(
            model=Toy(),
            work_dir=str(work_dir),
            train_dataloader=dict(
                dataset=data,
                sampler=dict(type='DefaultSampler', shuffle=False),
                collate_fn=dict(type='default_collate'),
                batch_size=2),
            optim_wrapper=dict(
                optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
            train_cfg=dict(by_epoch=False, max_iters=max_iters),
            default_hooks=dict(
                checkpoint=dict(
                    type='CheckpointHook', interval=2, by_epoch=False)),
            resume=resume,
            custom_hooks=[CountIters()],
            experiment_name=f'ckpt_{work_dir.name}_{max_iters}')

    first = runner(tmp_path / 'a', 2, False)
    first.train()
    resumed = runner(tmp_path / 'a', 4, True)
    resumed.train()
    straight = runner(tmp_path / 'b', 4, False)
    straight.train()
    # the resumed run started at iteration 2, from iter_2.pth's weights,
    # momentum included: a fresh start would also end on ``straight``
    # (same seed), so equal weights alone would prove nothing
    counter = [h for h in resumed.hooks if isinstance(h, CountIters)][0]
    assert counter.iters == [2, 3]
    assert resumed.iter == 4
    params = ('lin.weight', 'lin.bias')
    assert not any(
        torch.equal(first.model.state_dict()[k],
                    straight.model.state_dict()[k]) for k in params)
    torch.testing.assert_close(resumed.model.state_dict(),
                               straight.model.state_dict(), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# Attacks. Each builder writes a file to ``path`` whose loading would run
# ``touch marker`` (or change a class of this process) if it were executed.


class SystemPayload:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def plain_pickle(path, marker):
    with open(path, 'wb') as f:
        pickle.dump(dict(state_dict={}, meta=SystemPayload(marker)), f)


def legacy_torch(path, marker):
    torch.save(
        dict(meta=SystemPayload(marker)),
        path,
        _use_new_zipfile_serialization=False)


def zip_torch(path, marker):
    torch.save(dict(meta=SystemPayload(marker)), path)


def torchscript(path, marker):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)


# BUILD with slot state on a class object: stock pickle would run
# setattr(collections.Counter, 'most_common', collections.OrderedDict).
BUILD_ON_CLASS = (b'\x80\x02ccollections\nCounter\nN}X\x0b\x00\x00\x00'
                  b'most_commonccollections\nOrderedDict\ns\x86b.')


def build_plain(path, marker):
    with open(path, 'wb') as f:
        f.write(BUILD_ON_CLASS)


def build_in_zip(path, marker):
    """The BUILD payload as the data.pkl of a genuine torch zip file."""
    buffer = io.BytesIO()
    torch.save({}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(path, 'w') as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith('/data.pkl'):
                data = BUILD_ON_CLASS
            dst.writestr(info, data)


class HistoryBufferPayload:
    """Pickles as a HistoryBuffer whose state registers a new statistic."""

    def __init__(self, methods):
        self.methods = methods
        self.extra = {}

    @property
    def __class__(self):  # pickle checks __newobj__'s class against this
        return HistoryBuffer

    def __reduce__(self):
        state = dict(
            max_length=10,
            _log_history=np.zeros(1),
            _count_history=np.ones(1),
            statistics_methods=self.methods,
            **self.extra)
        return (copyreg.__newobj__, (HistoryBuffer, ), state)


def history_buffer_new_method(path, marker):
    torch.save(
        dict(message_hub=HistoryBufferPayload({'pwn': HistoryBuffer.min})),
        path)


def history_buffer_getattr(path, marker):
    methods = {'min': HistoryBuffer.register_statistics}
    torch.save(dict(message_hub=HistoryBufferPayload(methods)), path)


def history_buffer_system(path, marker):
    torch.save(
        dict(message_hub=HistoryBufferPayload({'min': SystemPayload(marker)
                                               })), path)


def history_buffer_shadowing(path, marker):
    """An instance ``_statistics_methods`` shadowing the class's dict."""
    payload = HistoryBufferPayload({})
    payload.extra = dict(_statistics_methods={'pwn': HistoryBuffer.min})
    torch.save(dict(message_hub=payload), path)


ATTACKS = [
    plain_pickle, legacy_torch, zip_torch, torchscript, build_plain,
    build_in_zip, history_buffer_new_method, history_buffer_getattr,
    history_buffer_system, history_buffer_shadowing
]


@pytest.fixture
def process_state():
    """Class state a payload could change; checked unchanged afterwards."""
    before = (collections.Counter.most_common,
              dict(HistoryBuffer._statistics_methods))
    yield
    after = (collections.Counter.most_common,
             dict(HistoryBuffer._statistics_methods))
    assert after == before, 'a refused checkpoint changed process state'


@pytest.mark.parametrize('attack', ATTACKS, ids=lambda a: a.__name__)
def test_refuses_attack(tmp_path, attack, process_state):
    path = str(tmp_path / 'evil.pth')
    marker = tmp_path / 'marker'
    attack(path, marker)
    with pytest.raises(UntrustedCheckpointError) as err:
        load_as_runner(path)
    assert not marker.exists(), 'the payload ran'
    msg = str(err.value)
    assert path in msg and TRUST_ENV in msg


def test_message_names_what_was_refused(tmp_path):
    path = str(tmp_path / 'evil.pth')
    zip_torch(path, tmp_path / 'marker')
    with pytest.raises(UntrustedCheckpointError, match='system'):
        load_as_runner(path)
    torchscript(path, None)
    with pytest.raises(UntrustedCheckpointError, match='TorchScript'):
        load_as_runner(path)
    history_buffer_new_method(path, None)
    with pytest.raises(UntrustedCheckpointError, match="'pwn'"):
        load_as_runner(path)


@dataclasses.dataclass
class Custom:
    value: float


def test_unknown_type_loads_only_when_trusted(tmp_path, monkeypatch):
    path = str(tmp_path / 'custom.pth')
    torch.save(dict(meta=Custom(1.0)), path)  # a class of ours
    with pytest.raises(UntrustedCheckpointError, match='Custom') as err:
        safe_load(path)
    assert path in str(err.value)
    assert 'allow_checkpoint_globals' in str(err.value)
    monkeypatch.setenv(TRUST_ENV, '1')  # explicit trust of this file
    assert safe_load(path)['meta'] == Custom(1.0)


def test_allow_checkpoint_globals_registers_a_type(tmp_path, monkeypatch):
    from projects.focal_retina.engine import checkpoint
    monkeypatch.setattr(checkpoint, '_USER_GLOBALS', [])
    path = str(tmp_path / 'custom.pth')
    torch.save(dict(meta=Custom(2.0)), path)
    allow_checkpoint_globals([(__name__, 'Custom')])
    assert safe_load(path)['meta'] == Custom(2.0)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_load(str(tmp_path / 'nope.pth'))


# ---------------------------------------------------------------------------
# Remote schemes take the same path after download.


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """Serves tmp_path/www on localhost; downloads go to tmp_path/hub."""
    www = tmp_path / 'www'
    www.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def test_http_checkpoint_loads_and_attack_is_refused(http_dir, tmp_path,
                                                     process_state):
    www, url = http_dir
    save_checkpoint(runner_style_checkpoint(), str(www / 'good.pth'))
    loaded = load_as_runner(f'{url}/good.pth')
    assert loaded['meta']['iter'] == 5
    marker = tmp_path / 'marker'
    legacy_torch(str(www / 'evil.pth'), marker)
    with pytest.raises(UntrustedCheckpointError, match='evil.pth'):
        load_as_runner(f'{url}/evil.pth')
    assert not marker.exists()


@pytest.mark.parametrize('scheme,table', [
    ('torchvision://', 'get_torchvision_models'),
    ('open-mmlab://', 'get_external_models'),
])
def test_named_model_schemes_are_safe(http_dir, tmp_path, monkeypatch,
                                      scheme, table, process_state):
    www, url = http_dir
    marker = tmp_path / 'marker'
    plain_pickle(str(www / 'evil.pth'), marker)
    monkeypatch.setattr(mm_ckpt, table,
                        lambda: {'resnet50': f'{url}/evil.pth'})
    with pytest.raises(UntrustedCheckpointError):
        load_as_runner(f'{scheme}resnet50')
    assert not marker.exists()
