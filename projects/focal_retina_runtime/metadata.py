"""What an exported ``.onnx`` file carries besides the graph.

One ``metadata_props`` entry, key :data:`META_KEY`, holds a JSON object:

* ``format``: :data:`FORMAT`;
* ``classes``: the class names, in label order;
* ``preprocess``: ``mean``, ``std``, ``bgr_to_rgb``, ``pad_size_divisor``,
  ``pad_value`` (the config's ``data_preprocessor``) and ``resize`` (the
  test pipeline's ``Resize``: ``scale`` (w, h), ``keep_ratio``,
  ``interpolation``; null without one);
* ``head``: ``num_classes``, ``num_levels``, per level ``base_anchors``
  (A, 4) and ``strides`` (w, h) of the model's ``AnchorGenerator``, and the
  ``bbox_coder`` parameters (``DeltaXYWHBBoxCoder``);
* ``test_cfg``: the config's ``model.test_cfg``;
* ``postprocess_in_graph``: whether the graph ends with NMS;
* ``inputs`` / ``outputs``: the graph's tensor names;
* ``source``: config, checkpoint, opset and library versions.

Everything is read from the built model and the config at export time, so
a file needs nothing else to run. Reading is torch-free.
"""
import json
from typing import Any, Dict, Optional

META_KEY = 'focal_retina'
FORMAT = 'focal_retina.onnx/1'
REQUIRED = ('classes', 'preprocess', 'head', 'test_cfg',
            'postprocess_in_graph', 'inputs', 'outputs')


class DeployError(ValueError):
    """A one-line explanation of why a model cannot be exported or run."""


def to_plain(obj: Any) -> Any:
    """ConfigDicts, tuples and numpy values as JSON-able Python objects."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if hasattr(obj, 'tolist'):  # numpy / torch values
        return obj.tolist()
    return obj


def encode(meta: Dict[str, Any]) -> str:
    return json.dumps(to_plain(dict(meta, format=FORMAT)), sort_keys=True)


def decode(props: Dict[str, str], source: str) -> Dict[str, Any]:
    """The metadata of a model file, validated.

    Args:
        props: The file's metadata key/value strings (``metadata_props``,
            or onnxruntime's ``custom_metadata_map``).
        source: How to name the file in errors.

    Raises:
        DeployError: The file was not written by our exporter, or by a
            newer, incompatible one.
    """
    text: Optional[str] = props.get(META_KEY)
    if text is None:
        raise DeployError(
            f'{source} has no {META_KEY!r} metadata: it was not exported by '
            'tools/deployment/export_onnx.py (class names, normalisation and '
            'post-processing settings are unknown)')
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise DeployError(
            f'{source}: unreadable {META_KEY!r} metadata ({exc})') from None
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
        found = meta.get('format') if isinstance(meta, dict) else meta
        raise DeployError(f'{source}: metadata format {found!r}, this '
                          f'version reads {FORMAT!r}; export the model again')
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise DeployError(f'{source}: metadata lacks {missing}; export the '
                          'model again')
    return meta


def read_onnx_metadata(path: str) -> Dict[str, Any]:
    """The metadata of ``path`` read with the ``onnx`` package (the graph's
    weights are not loaded)."""
    import onnx
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise DeployError(f'{path} is not a readable ONNX file: '
                          f'{type(exc).__name__}: {exc}') from None
    return decode({p.key: p.value for p in model.metadata_props}, path)
