"""ONNX deployment: the exporter (torch + onnx) and, re-exported from
:mod:`projects.focal_retina_runtime`, the torch-free runtime (metadata,
NumPy pre- and post-processing, :class:`OnnxDetector`, drawing).

Importing this package imports ``projects.focal_retina`` (every component
registered, so torch, mmcv, mmengine and mmdet); a program that only runs
exported files imports ``projects.focal_retina_runtime`` instead, which
needs numpy, opencv and onnxruntime alone. The exporter (:mod:`.export`)
imports onnx when called. Nothing here is registered, so
``projects.focal_retina`` does not import it.
"""
from projects.focal_retina_runtime import (FORMAT, META_KEY, DeployError,
                                           OnnxDetector, draw_detections,
                                           get_palette, predict_by_feat,
                                           predict_single, preprocess,
                                           read_image, read_onnx_metadata,
                                           session_options)

__all__ = [
    'FORMAT', 'META_KEY', 'DeployError', 'read_onnx_metadata',
    'predict_by_feat', 'predict_single', 'preprocess', 'OnnxDetector',
    'session_options', 'draw_detections', 'get_palette', 'read_image'
]
