"""mmengine's Runner with checkpoints that are written atomically.

mmengine writes a checkpoint straight to its final path (``torch.save`` of
the whole state into ``iter_N.pth``); a run killed while saving (a
preempted job, Ctrl-C, out of disk) leaves a truncated file that
``--resume`` then picks up as the latest one and fails on, while
``max_keep_ckpts`` may already have deleted the previous good one. Here
the checkpoint goes to ``iter_N.pth.part`` in the same folder, is flushed
to disk (fsync) and renamed over the final name (``os.replace``, atomic on
POSIX): the final path holds either the old or the complete new file.
mmengine's ``CheckpointHook`` updates ``last_checkpoint`` only after the
save returns, so it never names a partial file either.
"""
import os
import os.path as osp

from mmengine.dist import master_only
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@RUNNERS.register_module()
class FocalRetinaRunner(Runner):
    """``Runner`` whose ``save_checkpoint`` is atomic for local folders."""

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args,
                        **kwargs) -> None:
        if '://' in out_dir:  # a remote backend: mmengine's own writing
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        final = osp.join(out_dir, filename)
        part = final + '.part'
        try:
            super().save_checkpoint(out_dir, filename + '.part', *args,
                                    **kwargs)
            _fsync(part)
            os.replace(part, final)
        except BaseException:
            if osp.exists(part):
                os.remove(part)
            raise
        _fsync(out_dir)  # the rename itself reaches the disk
