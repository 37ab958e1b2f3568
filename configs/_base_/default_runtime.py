# mmdet's runtime, plus our components and iteration-based logging and
# checkpoints (the paper's schedules are counted in iterations, Sec. 4.1).
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(
    imports=['projects.focal_retina'], allow_failed_imports=False)
# SafeCheckpointHook: mmengine's CheckpointHook, deleting the oldest
# checkpoint after the new one is written (not before).
default_hooks = dict(
    checkpoint=dict(
        type='SafeCheckpointHook',
        by_epoch=False,
        interval=10000,
        max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
