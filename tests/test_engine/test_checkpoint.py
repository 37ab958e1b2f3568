"""Safe loading of mmengine checkpoints (torch >= 2.6 weights_only)."""
import dataclasses
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import _load_checkpoint, save_checkpoint

from projects.focal_retina.engine import UntrustedCheckpointError, safe_load
from projects.focal_retina.engine.checkpoint import TRUST_ENV


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
            arr=np.arange(6, dtype=np.int64).reshape(2, 3)),
        state_dict=model.state_dict(),
        optimizer=optim.state_dict(),
        message_hub=hub.state_dict(),
        param_schedulers=[dict(milestones={60: 1}, last_epoch=5)])


def test_loads_runner_checkpoint_through_mmengine(tmp_path):
    ckpt = runner_style_checkpoint()
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint(ckpt, path)
    # the plain torch default (weights_only) refuses this file ...
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    # ... mmengine's loader, which we replaced for local files, loads it
    loaded = _load_checkpoint(path, map_location='cpu')
    torch.testing.assert_close(loaded['state_dict'], ckpt['state_dict'])
    assert loaded['optimizer']['state'][0]['momentum_buffer'].shape == \
        (4, 3, 3, 3)
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    assert buf.current() == pytest.approx(1 / 3)
    assert buf.min() == pytest.approx(1 / 3)
    np.testing.assert_array_equal(loaded['meta']['arr'], ckpt['meta']['arr'])
    assert loaded['meta']['dataset_meta']['classes'] == ('a', 'b')
    assert loaded['message_hub']['runtime_info']['np_value'] == 0.5


@dataclasses.dataclass
class Custom:
    value: float


class Payload:

    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null', ))


class GetattrPayload:
    """getattr on an allowed class, but not an allowed attribute."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, 'register_statistics'))


class PopenPayload:

    def __reduce__(self):
        return (subprocess.Popen, (['true'], ))


@pytest.mark.parametrize('payload,name',
                         [(Payload(), 'system'),
                          (GetattrPayload(), 'register_statistics'),
                          (PopenPayload(), 'subprocess.Popen')])
def test_refuses_code_execution(tmp_path, payload, name):
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={}, meta=payload), path)
    with pytest.raises(UntrustedCheckpointError) as err:
        _load_checkpoint(path, map_location='cpu')
    msg = str(err.value)
    assert name in msg and TRUST_ENV in msg


def test_unknown_type_names_type_and_override(tmp_path, monkeypatch):
    path = str(tmp_path / 'custom.pth')
    torch.save(dict(meta=Custom(1.0)), path)  # a class of ours
    with pytest.raises(
            UntrustedCheckpointError, match=r'test_checkpoint\.Custom') as err:
        safe_load(path)
    assert str(path) in str(err.value)
    assert 'allow_checkpoint_globals' in str(err.value)
    monkeypatch.setenv(TRUST_ENV, '1')  # explicit trust of this file
    assert safe_load(path)['meta'] == Custom(1.0)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_load(str(tmp_path / 'nope.pth'))
