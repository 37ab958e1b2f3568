"""focal_retina_runtime: an exported RetinaNet without PyTorch.

What runs an exported file (``.onnx``, or an OpenVINO IR ``.xml``) needs
only numpy, opencv and onnxruntime or OpenVINO (requirements/deploy.txt):
the metadata reader, the pre-processing, the NumPy post-processing,
:class:`OnnxDetector` (either backend) and the drawing of its boxes.
The package lives beside ``projects.focal_retina`` rather than inside it:
importing anything under ``projects.focal_retina`` runs that package's
``__init__``, which registers every component with mmdet and so imports
torch, mmcv, mmengine and mmdet. ``projects.focal_retina.deployment``
re-exports these names and adds the exporter (torch + onnx).

Nothing here imports onnx, onnxruntime, OpenVINO or OpenCV at import
time; the functions that need them import them when called.
"""
from .metadata import FORMAT, META_KEY, DeployError, read_onnx_metadata
from .postprocess import predict_by_feat, predict_single
from .preprocess import preprocess
from .runner import BACKENDS, OnnxDetector, openvino_config, session_options
from .visualize import draw_detections, get_palette, read_image

__all__ = [
    'FORMAT', 'META_KEY', 'DeployError', 'read_onnx_metadata',
    'predict_by_feat', 'predict_single', 'preprocess', 'OnnxDetector',
    'session_options', 'draw_detections', 'get_palette', 'read_image',
    'BACKENDS', 'openvino_config'
]
