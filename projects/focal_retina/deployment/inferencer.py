"""An ``.onnx`` file's detections as mmdet's ``DetDataSample`` and back.

``tools/infer.py --tile`` on an exported file merges the windows with
:func:`projects.focal_retina.inference.detect_tiled`, which is PyTorch code
on ``DetDataSample`` s; these convert the NumPy detections of
:class:`projects.focal_retina_runtime.OnnxDetector` for it. Everything else
the tool does with a file is torch-free.
"""
from typing import Dict, Sequence

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData


def to_data_sample(dets: Dict[str, np.ndarray],
                   ori_shape: Sequence[int]) -> DetDataSample:
    """A ``DetDataSample`` whose ``pred_instances`` are ``dets`` (boxes in
    pixels of an image of ``ori_shape`` (h, w))."""
    sample = DetDataSample(
        metainfo=dict(
            ori_shape=tuple(ori_shape[:2]), img_shape=tuple(ori_shape[:2])))
    sample.pred_instances = InstanceData(
        bboxes=torch.from_numpy(
            np.ascontiguousarray(dets['bboxes'], np.float32)),
        scores=torch.from_numpy(
            np.ascontiguousarray(dets['scores'], np.float32)),
        labels=torch.from_numpy(np.asarray(dets['labels'], np.int64)))
    return sample


def from_data_sample(sample: DetDataSample) -> Dict[str, np.ndarray]:
    """``bboxes``, ``scores``, ``labels`` of a sample's predictions."""
    inst = sample.pred_instances
    return dict(
        bboxes=inst.bboxes.cpu().numpy().reshape(-1, 4).astype(np.float32),
        scores=inst.scores.cpu().numpy().astype(np.float32),
        labels=inst.labels.cpu().numpy().astype(np.int64))
