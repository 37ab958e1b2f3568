"""ONNX deployment: export (torch side) and an onnxruntime runner with the
NumPy pre- and post-processing (torch-free).

Importing this package needs neither onnx nor onnxruntime nor torch; the
exporter (:mod:`.export`, torch + onnx) and the runner's session
(:class:`OnnxDetector`, onnxruntime) import them when used. Nothing is
registered, so ``projects.focal_retina`` does not import it.
"""
from .metadata import FORMAT, META_KEY, DeployError, read_onnx_metadata
from .postprocess import predict_by_feat, predict_single
from .preprocess import preprocess
from .runner import OnnxDetector, session_options

__all__ = [
    'FORMAT', 'META_KEY', 'DeployError', 'read_onnx_metadata',
    'predict_by_feat', 'predict_single', 'preprocess', 'OnnxDetector',
    'session_options'
]
