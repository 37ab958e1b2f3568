"""An ``.onnx`` file behind the part of mmdet's ``DetInferencer`` that
``tools/infer.py`` uses, so that a file and a checkpoint share one tool:
the same filtering, tiling, drawing (mmdet's ``DetLocalVisualizer``) and
JSON (``DetInferencer.pred2dict``).

Unlike :class:`.runner.OnnxDetector` this needs torch and mmdet (for the
``DetDataSample`` and the visualizer); the detections come from
onnxruntime and the NumPy post-processing all the same.
"""
import time
from types import SimpleNamespace
from typing import Dict, Optional

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from .runner import OnnxDetector


class OnnxInferencer:
    """``DetInferencer``'s interface for an exported file.

    Args:
        path: The ``.onnx`` file.
        threads: onnxruntime intra-op threads (None: its default).

    Attributes:
        model: ``dataset_meta`` (classes, palette) as mmdet's model has it.
        visualizer: A ``DetLocalVisualizer`` knowing the classes.
        test_cfg: The exported model's ``test_cfg``.
    """

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        from mmdet.visualization import DetLocalVisualizer
        self.detector = OnnxDetector(path, threads=threads)
        meta = self.detector.meta
        dataset_meta = dict(classes=tuple(meta['classes']))
        if meta.get('palette'):
            dataset_meta['palette'] = [tuple(c) for c in meta['palette']]
        self.model = SimpleNamespace(dataset_meta=dataset_meta)
        self.test_cfg = meta['test_cfg']
        # Visualizers are named singletons; a fresh name per inferencer.
        self.visualizer = DetLocalVisualizer.get_instance(
            f'focal_retina_onnx_{time.time_ns()}')
        self.visualizer.dataset_meta = dataset_meta

    def __call__(self, bgr: np.ndarray, **kwargs) -> Dict[str, list]:
        """``{'predictions': [DetDataSample]}`` for one BGR image (the
        keyword arguments of ``DetInferencer.__call__`` are accepted and
        ignored: nothing is saved, samples are returned)."""
        batch, metas = self.detector.prepare([bgr])
        dets = self.detector.run_batch(batch, metas)[0]
        sample = DetDataSample(
            metainfo=dict(
                ori_shape=tuple(metas[0]['ori_shape']),
                img_shape=tuple(metas[0]['img_shape']),
                scale_factor=tuple(metas[0]['scale_factor']),
                batch_input_shape=tuple(batch.shape[2:])))
        sample.pred_instances = InstanceData(
            bboxes=torch.from_numpy(np.ascontiguousarray(dets['bboxes'])),
            scores=torch.from_numpy(np.ascontiguousarray(dets['scores'])),
            labels=torch.from_numpy(dets['labels'].astype(np.int64)))
        return dict(predictions=[sample])

    def pred2dict(self,
                  data_sample: DetDataSample,
                  pred_out_dir: str = '') -> dict:
        """mmdet's ``DetInferencer.pred2dict`` (labels, scores, bboxes)."""
        from mmdet.apis import DetInferencer
        return DetInferencer.pred2dict(self, data_sample, pred_out_dir)
