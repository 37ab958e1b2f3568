"""Runs an exported ``.onnx`` detector with onnxruntime (no torch needed).

    det = OnnxDetector('model.onnx', threads=2)
    dets = det([cv2.imread('photo.jpg')])[0]   # bboxes, scores, labels
    names = [det.classes[i] for i in dets['labels']]

Pre-processing (:mod:`.preprocess`) and, for the default export,
post-processing (:mod:`.postprocess`) run in NumPy with the parameters of
the file's metadata; a ``--with-postprocess`` file returns its detections
from the session itself. Boxes are x1, y1, x2, y2 in pixels of the image
passed in, best first.
"""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .metadata import DeployError, decode
from .postprocess import Detections, empty_detections, predict_by_feat
from .preprocess import preprocess

GRAPH_OPT_LEVELS = ('disable', 'basic', 'extended', 'all')


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


class OnnxDetector:
    """An exported RetinaNet in an onnxruntime session.

    Args:
        path: The ``.onnx`` file written by ``export_onnx``.
        threads: Intra-op threads (None: onnxruntime's default).
        graph_opt: Graph optimisation level, one of
            :data:`GRAPH_OPT_LEVELS`.
        providers: onnxruntime execution providers (default: CPU).

    Raises:
        DeployError: No such file, not an ONNX file, or no metadata of ours.
    """

    def __init__(self,
                 path: str,
                 threads: Optional[int] = None,
                 graph_opt: str = 'all',
                 providers: Optional[Sequence[str]] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise DeployError(
                'onnxruntime is not installed: pip install '
                '-r requirements/deploy.txt (or .[deploy])') from None
        if not osp.isfile(path):
            raise DeployError(f'model file {path!r} does not exist')
        self.path = path
        self.threads, self.graph_opt = threads, graph_opt
        try:
            self.session = ort.InferenceSession(
                path,
                session_options(threads, graph_opt),
                providers=list(providers or ['CPUExecutionProvider']))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc) else ''
            raise DeployError(f'{path}: onnxruntime cannot load it '
                              f'({type(exc).__name__}: {first})') from None
        self.meta = decode(self.session.get_modelmeta().custom_metadata_map,
                           path)
        self.classes: List[str] = list(self.meta['classes'])
        self.in_graph: bool = bool(self.meta['postprocess_in_graph'])

    def describe(self) -> str:
        """The session's settings, for benchmark and log lines."""
        import onnxruntime as ort
        return (f'onnxruntime {ort.__version__}, providers '
                f'{self.session.get_providers()}, intra-op threads '
                f'{self.threads or "default"}, inter-op 1, sequential, no '
                f'spinning, graph optimisation {self.graph_opt}')

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
        outs = self.session.run(None, {self.meta['inputs'][0]: batch})
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
            None, {
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
