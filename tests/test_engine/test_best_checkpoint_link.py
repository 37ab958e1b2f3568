"""``SafeCheckpointHook`` with ``save_best``: ``best_<metric>.pth`` names
mmengine's current ``best_<metric>_iter_N.pth`` (a name the next command
can be given before N is known), through new bests and on a filesystem
without symlinks. mmengine's Runner and validation loop on a toy model,
pinned to the CPU."""
import os
import os.path as osp

import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS

from projects.focal_retina.engine import FocalRetinaRunner, safe_load
from tests.test_engine.test_hooks import DATA, Toy

SCORES = [0.1, 0.3, 0.2]  # validation after iterations 1, 2, 3
BEST_ITER = SCORES.index(max(SCORES)) + 1


@METRICS.register_module(force=True)
class ScriptedScore(BaseMetric):
    """Reports the next of ``SCORES`` at each validation."""

    def __init__(self, scores, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scores = list(scores)

    def process(self, data_batch, data_samples) -> None:
        self.results.append(0)

    def compute_metrics(self, results) -> dict:
        return dict(score=self.scores.pop(0))


def train(work_dir) -> None:
    loader = dict(
        dataset=DATA,
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='default_collate'),
        batch_size=2)
    torch.manual_seed(0)
    FocalRetinaRunner(
        model=Toy(),
        work_dir=str(work_dir),
        train_dataloader=loader,
        val_dataloader=loader,
        val_evaluator=dict(type='ScriptedScore', scores=SCORES),
        val_cfg=dict(type='ValLoop'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=3, val_interval=1),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=10**6),
            checkpoint=dict(
                type='SafeCheckpointHook',
                interval=1,
                by_epoch=False,
                save_best='score',
                rule='greater')),
        experiment_name=f'best_link_{osp.basename(str(work_dir))}',
    ).train()


def weights(path) -> dict:
    return safe_load(str(path), map_location='cpu')['state_dict']


def assert_same_weights(path, expected) -> None:
    got, want = weights(path), weights(expected)
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_best_link_follows_the_best_validation(tmp_path):
    train(tmp_path / 'link')
    work = tmp_path / 'link'
    best = work / f'best_score_iter_{BEST_ITER}.pth'
    # mmengine's own file for the best score, the earlier best removed.
    assert best.is_file()
    assert sorted(p.name
                  for p in work.glob('best_score_iter_*.pth')) == [best.name]
    link = work / 'best_score.pth'
    assert link.is_symlink()
    assert os.readlink(link) == best.name  # relative: the folder can move
    # The weights of iteration 2 (the checkpoint hook saved every
    # iteration), not those of the later, worse iteration 3.
    assert_same_weights(link, work / f'iter_{BEST_ITER}.pth')
    assert not torch.equal(
        weights(work / 'iter_3.pth')['backbone.weight'],
        weights(link)['backbone.weight'])


def test_best_is_a_copy_without_symlinks(tmp_path, monkeypatch):

    def no_symlinks(*args, **kwargs):
        raise OSError('symbolic links are not supported here')

    monkeypatch.setattr(os, 'symlink', no_symlinks)
    train(tmp_path / 'copy')
    link = tmp_path / 'copy' / 'best_score.pth'
    assert link.is_file() and not link.is_symlink()
    assert_same_weights(link, tmp_path / 'copy' / f'iter_{BEST_ITER}.pth')
    assert not list((tmp_path / 'copy').glob('*.tmp'))
