"""Runs an exported detector with onnxruntime or OpenVINO (no torch needed).

    det = OnnxDetector('model.onnx', threads=2)
    dets = det([cv2.imread('photo.jpg')])[0]   # bboxes, scores, labels
    names = [det.classes[i] for i in dets['labels']]
    det = OnnxDetector('model.onnx', backend='openvino', precision='bf16')
    det = OnnxDetector('model_int8.xml')         # OpenVINO IR: openvino

One runner, two backends: the session is onnxruntime's or OpenVINO's
(``backend``; ``'auto'``: OpenVINO for an IR ``.xml``, onnxruntime for an
``.onnx``), everything else is shared. Pre-processing (:mod:`.preprocess`)
and, for the default export, post-processing (:mod:`.postprocess`) run in
NumPy with the parameters of the file's metadata; a
``--with-postprocess`` file returns its detections from the session
itself. Boxes are x1, y1, x2, y2 in pixels of the image passed in, best
first.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metadata import META_KEY, DeployError, decode
from .postprocess import Detections, empty_detections, predict_by_feat
from .preprocess import preprocess

GRAPH_OPT_LEVELS = ('disable', 'basic', 'extended', 'all')
BACKENDS = ('onnxruntime', 'openvino')
# OpenVINO's INFERENCE_PRECISION_HINT: the precision of the layers that
# are not int8 (an int8 IR's quantised convolutions stay int8 under both).
PRECISIONS = dict(fp32='f32', bf16='bf16')
INSTALL = 'pip install -r requirements/deploy.txt (or .[deploy])'


def session_options(threads: Optional[int] = None,
                    graph_opt: str = 'all',
                    inter_threads: int = 1):
    """onnxruntime ``SessionOptions``: ``threads`` intra-op threads (None:
    onnxruntime's default, one per core), sequential execution, the given
    graph optimisation level."""
    import onnxruntime as ort
    if graph_opt not in GRAPH_OPT_LEVELS:
        raise DeployError(f'graph optimisation {graph_opt!r}: expected one '
                          f'of {GRAPH_OPT_LEVELS}')
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No busy-waiting between runs: onnxruntime's threads otherwise spin
    # after each run and starve whatever shares the cores (PyTorch in the
    # benchmark ran 10-20x slower beside a spinning session on 2 cores).
    opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    opts.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, {
            'disable': 'ORT_DISABLE_ALL',
            'basic': 'ORT_ENABLE_BASIC',
            'extended': 'ORT_ENABLE_EXTENDED',
            'all': 'ORT_ENABLE_ALL'
        }[graph_opt])
    return opts


def openvino_config(threads: Optional[int] = None,
                    precision: str = 'fp32') -> Dict[str, object]:
    """OpenVINO CPU properties: one stream, the latency hint (one image at
    a time, every thread on it), ``threads`` inference threads (None:
    OpenVINO's default, one per physical core) and the precision hint."""
    if precision not in PRECISIONS:
        raise DeployError(f'precision {precision!r}: expected one of '
                          f'{tuple(PRECISIONS)}')
    cfg: Dict[str, object] = dict(
        PERFORMANCE_HINT='LATENCY',
        NUM_STREAMS=1,
        INFERENCE_PRECISION_HINT=PRECISIONS[precision])
    if threads is not None:
        cfg['INFERENCE_NUM_THREADS'] = int(threads)
    return cfg


def resolve_backend(path: str, backend: str = 'auto') -> str:
    """``backend`` for ``path``: ``'auto'`` is OpenVINO for an IR
    (``.xml``), onnxruntime otherwise; an IR under onnxruntime is refused.
    """
    is_ir = path.lower().endswith('.xml')
    if backend == 'auto':
        return 'openvino' if is_ir else 'onnxruntime'
    if backend not in BACKENDS:
        raise DeployError(f'backend {backend!r}: expected one of '
                          f'{("auto", ) + BACKENDS}')
    if is_ir and backend != 'openvino':
        raise DeployError(f'{path} is an OpenVINO IR: run it with '
                          "backend 'openvino'")
    return backend


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ''


class _OrtSession:
    """An onnxruntime session: metadata and runs by tensor name."""

    def __init__(self, path: str, threads: Optional[int], graph_opt: str,
                 providers: Optional[Sequence[str]]) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise DeployError(
                f'onnxruntime is not installed: {INSTALL}') from None
        self.threads, self.graph_opt = threads, graph_opt
        try:
            self.session = ort.InferenceSession(
                path,
                session_options(threads, graph_opt),
                providers=list(providers or ['CPUExecutionProvider']))
        except Exception as exc:
            raise DeployError(
                f'{path}: onnxruntime cannot load it '
                f'({type(exc).__name__}: {_first_line(exc)})') from None
        self.props = self.session.get_modelmeta().custom_metadata_map

    def run(self, outputs: Sequence[str],
            feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return self.session.run(list(outputs), feeds)

    def describe(self) -> str:
        import onnxruntime as ort
        return (f'onnxruntime {ort.__version__}, providers '
                f'{self.session.get_providers()}, intra-op threads '
                f'{self.threads or "default"}, inter-op 1, sequential, no '
                f'spinning, graph optimisation {self.graph_opt}')


class _OpenVinoSession:
    """An OpenVINO CPU compiled model (an ``.onnx`` read by its ONNX
    front end, or an IR): metadata and runs by tensor name.

    Shapes stay dynamic as exported: OpenVINO's CPU plugin compiles
    kernels per input shape on first use.
    """

    def __init__(self, path: str, threads: Optional[int],
                 precision: str) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise DeployError(
                f'openvino is not installed: {INSTALL}') from None
        self.threads, self.precision = threads, precision
        config = openvino_config(threads, precision)
        core = ov.Core()
        try:
            model = core.read_model(path)
            self.compiled = core.compile_model(model, 'CPU', config)
        except Exception as exc:
            raise DeployError(
                f'{path}: OpenVINO cannot load it '
                f'({type(exc).__name__}: {_first_line(exc)})') from None
        self.props = {}
        # An IR written by our tools carries the metadata at the top of
        # its rt_info; OpenVINO's ONNX front end puts an .onnx file's
        # metadata_props under 'framework'.
        for where in ([META_KEY], ['framework', META_KEY]):
            if model.has_rt_info(where):
                self.props[META_KEY] = model.get_rt_info(where).astype(str)
                break
        self.request = self.compiled.create_infer_request()
        self.names = {}
        for port in self.compiled.outputs:
            for name in port.get_names():
                self.names[name] = port

    def run(self, outputs: Sequence[str],
            feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        result = self.request.infer(feeds)
        # copy: the request's output buffers are reused by the next run
        return [np.array(result[self.names[n]]) for n in outputs]

    def describe(self) -> str:
        import openvino as ov

        # What the plugin took: a CPU without bf16 support runs f32.
        hint = self.compiled.get_property('INFERENCE_PRECISION_HINT')
        return (f'OpenVINO {ov.get_version().split("-")[0]} CPU, inference '
                f'threads {self.threads or "default"}, 1 stream, latency '
                f'hint, precision hint {hint.get_type_name()}')


class OnnxDetector:
    """An exported RetinaNet in an onnxruntime or OpenVINO session.

    Args:
        path: The ``.onnx`` file written by ``export_onnx``, or an OpenVINO
            IR ``.xml`` (``export_onnx.py --out model.xml``,
            ``quantize.py``).
        threads: Intra-op / inference threads (None: the backend's
            default).
        graph_opt: onnxruntime's graph optimisation level, one of
            :data:`GRAPH_OPT_LEVELS`.
        providers: onnxruntime execution providers (default: CPU).
        backend: ``'onnxruntime'``, ``'openvino'`` or ``'auto'`` (OpenVINO
            for ``.xml``, onnxruntime for ``.onnx``).
        precision: OpenVINO's precision for what is not int8: ``'fp32'``
            or ``'bf16'`` (onnxruntime runs the file as it is: fp32).

    Raises:
        DeployError: No such file, not a model file, no metadata of ours,
            a backend or precision that cannot run it.
    """

    def __init__(self,
                 path: str,
                 threads: Optional[int] = None,
                 graph_opt: str = 'all',
                 providers: Optional[Sequence[str]] = None,
                 backend: str = 'auto',
                 precision: str = 'fp32') -> None:
        if not osp.isfile(path):
            raise DeployError(f'model file {path!r} does not exist')
        self.path = path
        self.backend = resolve_backend(path, backend)
        self.threads, self.graph_opt = threads, graph_opt
        self.precision = precision
        if self.backend == 'openvino':
            self.session = _OpenVinoSession(path, threads, precision)
        else:
            if precision != 'fp32':
                raise DeployError(f'precision {precision!r}: onnxruntime '
                                  "runs the file as exported ('fp32'); "
                                  "bf16 needs backend 'openvino'")
            self.session = _OrtSession(path, threads, graph_opt, providers)
        self.meta = decode(self.session.props, path)
        self.classes: List[str] = list(self.meta['classes'])
        self.in_graph: bool = bool(self.meta['postprocess_in_graph'])

    def describe(self) -> str:
        """The session's settings, for benchmark and log lines."""
        return self.session.describe()

    def run_raw(self, batch: np.ndarray) -> Tuple[list, list]:
        """The head's raw outputs for a preprocessed batch.

        Args:
            batch: (B, 3, H, W) float32, normalised and padded.

        Returns:
            Per level (B, A*K, H_l, W_l) logits and (B, A*4, H_l, W_l) box
            outputs.
        """
        if self.in_graph:
            raise DeployError(f'{self.path} was exported with '
                              '--with-postprocess: it has no raw outputs')
        outs = self.session.run(self.meta['outputs'],
                                {self.meta['inputs'][0]: batch})
        levels = self.meta['head']['num_levels']
        return outs[:levels], outs[levels:]

    def run_batch(self, batch: np.ndarray,
                  metas: Sequence[dict]) -> List[Detections]:
        """Detections for a preprocessed batch (see :meth:`__call__`)."""
        if not self.in_graph:
            cls_scores, bbox_preds = self.run_raw(batch)
            return predict_by_feat(cls_scores, bbox_preds, metas,
                                   self.meta['head'], self.meta['test_cfg'])
        shapes = np.array([m['img_shape'] for m in metas], np.float32)
        factors = np.array([m['scale_factor'][:2] for m in metas], np.float32)
        names = self.meta['inputs']
        batch_idx, boxes, scores, labels = self.session.run(
            self.meta['outputs'], {
                names[0]: batch,
                names[1]: shapes,
                names[2]: factors
            })
        out = []
        for i in range(len(metas)):
            sel = batch_idx == i
            if not sel.any():
                out.append(empty_detections())
                continue
            out.append(
                dict(
                    bboxes=boxes[sel],
                    scores=scores[sel],
                    labels=labels[sel].astype(np.int64)))
        return out

    def prepare(self, images: Sequence[np.ndarray]) -> Tuple[np.ndarray, list]:
        """The session's input batch (B, 3, H, W) and the image metas for
        BGR uint8 images.

        A file exported with a fixed size gets every batch padded up to
        it, where mmdet pads only to the ``pad_size_divisor``: the features
        near the right and bottom border then differ from PyTorch's, and
        so may the detections there (docs/deployment.md, "Fixed input
        size")."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise DeployError('pass a list of images, not one array')
        batch, metas = preprocess(images, self.meta['preprocess'])
        fixed = self.meta.get('input_shape')
        if fixed:  # exported with a fixed --shape: pad up to it
            if batch.shape[2] > fixed[0] or batch.shape[3] > fixed[1]:
                raise DeployError(
                    f'{self.path} takes inputs of at most {fixed[0]}x'
                    f'{fixed[1]} px, the resized images are '
                    f'{batch.shape[2]}x{batch.shape[3]}; export with '
                    '--dynamic or a larger --shape')
            padded = np.full(batch.shape[:2] + tuple(fixed),
                             self.meta['preprocess'].get('pad_value',
                                                         0), np.float32)
            padded[:, :, :batch.shape[2], :batch.shape[3]] = batch
            batch = padded
        return batch, metas

    def __call__(self, images: Sequence[np.ndarray]) -> List[Detections]:
        """Detections of BGR uint8 images, one dict per image: ``bboxes``
        (n, 4) in the image's pixels, ``scores`` (n,), ``labels`` (n,)."""
        return self.run_batch(*self.prepare(images))
