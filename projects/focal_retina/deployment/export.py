"""ONNX export of a RetinaNet config + checkpoint (backbone, FPN, head).

The default graph ends at the head's raw outputs, per level
``cls_score_{i}`` (B, A*K, H_i, W_i) logits and ``bbox_pred_{i}``
(B, A*4, H_i, W_i); the NumPy post-processing of
:mod:`projects.focal_retina_runtime.postprocess` turns them into
detections. With ``with_postprocess`` the graph also
decodes and runs ``NonMaxSuppression`` (:mod:`.graph_postprocess`).
Batch and image size are dynamic unless a fixed ``shape`` is asked for.
The metadata (:mod:`projects.focal_retina_runtime.metadata`) is read from
the built model and config.

The TorchScript-based exporter (``dynamo=False``) is used: it exports
mmdet's FPN upsampling and GroupNorm from opset :data:`MIN_OPSET`
(:data:`MIN_OPSET_POSTPROCESS` with the post-processing), keeps the
shapes dynamic through ``dynamic_axes`` and needs no ``onnxscript``.
"""
import copy
import inspect
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from projects.focal_retina_runtime.metadata import (META_KEY, DeployError,
                                                    encode)

# The lowest opsets torch's TorchScript exporter writes each graph at
# (tests/test_deployment/test_export.py exports and runs both there, and
# checks that one below is refused). The raw outputs need opset 9: mmdet's
# FPN upsamples with F.interpolate(size=...), which opset 7-8 cannot express
# dynamically (Upsample with computed scales arrives in 9). The in-graph
# post-processing needs 10: NonMaxSuppression, TopK with a k input and the
# flip of (h, w) into (w, h) (aten::flip) all arrive in 10.
MIN_OPSET = 9
MIN_OPSET_POSTPROCESS = 10
DEFAULT_OPSET = 17


class RawOutputs(nn.Module):
    """The detector up to the head's raw outputs, levels flattened into
    one tuple (all ``cls_score``, then all ``bbox_pred``)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        cls_scores, bbox_preds = self.detector.bbox_head(
            self.detector.extract_feat(images))
        return (*cls_scores, *bbox_preds)


def _state_dict(ckpt: Any, path: str) -> Dict[str, torch.Tensor]:
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise DeployError(f'checkpoint {path!r} holds no state_dict')
    # DDP-wrapped models save 'module.'-prefixed names (mmengine strips it).
    return {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state.items()
    }


def check_fit(model: nn.Module, state: Dict[str, torch.Tensor], ckpt_path: str,
              config_path: str) -> None:
    """Raises DeployError naming what differs between checkpoint and model
    (mmengine would only warn and export random weights)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f'{k} is {tuple(state[k].shape)} in the checkpoint, '
        f'{tuple(own[k].shape)} in the model' for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = shapes[:1]
    if missing:
        parts.append(f'{len(missing)} model tensors missing from the '
                     f'checkpoint (e.g. {missing[0]})')
    if unexpected:
        parts.append(f'{len(unexpected)} checkpoint tensors unknown to '
                     f'the model (e.g. {unexpected[0]})')
    if parts:
        more = f' (+{len(shapes) - 1} more shape mismatches)' \
            if len(shapes) > 1 else ''
        raise DeployError(f'checkpoint {ckpt_path!r} does not fit config '
                          f'{config_path!r}: {"; ".join(parts)}{more}')


def _config_meta(cfg) -> dict:
    """``classes`` and ``palette`` of the config's test dataset (metainfo,
    else the dataset class's METAINFO)."""
    from mmdet.registry import DATASETS
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    while isinstance(dataset.get('dataset'), dict):
        dataset = dataset['dataset']
    meta = dict(dataset.get('metainfo') or {})
    if dataset.get('type'):
        cls = DATASETS.get(dataset['type'])
        meta = dict(getattr(cls, 'METAINFO', None) or {}, **meta)
    return meta


def test_resize(cfg) -> Optional[dict]:
    """The test pipeline's ``Resize`` as :func:`.preprocess.resize` takes
    it (None when the pipeline does not resize)."""
    loader = cfg.get('test_dataloader') or {}
    pipeline = (loader.get('dataset')
                or {}).get('pipeline') or cfg.get('test_pipeline') or []
    for t in pipeline:
        kind = str(t.get('type', '')).split('.')[-1]
        if kind in ('TestTimeAug',
                    'MultiScaleFlipAug') or (kind.endswith('Resize')
                                             and kind != 'Resize'):
            raise DeployError(f'test pipeline transform {kind!r} is not '
                              'supported by the export (plain Resize only)')
        if kind == 'Resize':
            if t.get('scale') is None:
                raise DeployError('test pipeline Resize without scale= '
                                  f'({dict(t)}) is not supported')
            scale = t['scale']
            scale = [scale, scale] if isinstance(scale, int) else list(scale)
            return dict(
                scale=scale,
                keep_ratio=bool(t.get('keep_ratio', False)),
                interpolation=t.get('interpolation', 'bilinear'))
    return None


def preprocess_meta(model: nn.Module, cfg) -> dict:
    """Normalisation and padding as the built ``data_preprocessor`` runs
    them, plus the test resize."""
    pre = model.data_preprocessor
    normalise = getattr(pre, '_enable_normalize', False)
    return dict(
        mean=pre.mean.view(-1).tolist() if normalise else None,
        std=pre.std.view(-1).tolist() if normalise else None,
        bgr_to_rgb=bool(getattr(pre, '_channel_conversion', False)),
        pad_size_divisor=int(getattr(pre, 'pad_size_divisor', 1)),
        pad_value=float(getattr(pre, 'pad_value', 0)),
        resize=test_resize(cfg))


def head_meta(model: nn.Module) -> dict:
    """Anchors and box coder of the built head (what post-processing
    needs), checked to be the kinds it implements."""
    from mmdet.models.task_modules import AnchorGenerator, DeltaXYWHBBoxCoder
    head = getattr(model, 'bbox_head', None)
    gen = getattr(head, 'prior_generator', None)
    coder = getattr(head, 'bbox_coder', None)
    if not isinstance(gen, AnchorGenerator):
        raise DeployError(f'the model\'s head ({type(head).__name__}) has '
                          f'no AnchorGenerator (found {type(gen).__name__})')
    if not isinstance(coder, DeltaXYWHBBoxCoder):
        raise DeployError(f'box coder {type(coder).__name__} is not '
                          'supported (DeltaXYWHBBoxCoder only)')
    if not getattr(head, 'use_sigmoid_cls', False):
        raise DeployError('only sigmoid classification heads are supported')
    wh_clip = inspect.signature(
        coder.decode).parameters['wh_ratio_clip'].default
    return dict(
        num_classes=int(head.cls_out_channels),
        num_levels=int(gen.num_levels),
        base_anchors=[b.tolist() for b in gen.base_anchors],
        strides=[[float(v) for v in s] for s in gen.strides],
        bbox_coder=dict(
            means=list(coder.means),
            stds=list(coder.stds),
            wh_ratio_clip=float(wh_clip),
            clip_border=bool(coder.clip_border),
            add_ctr_clamp=bool(coder.add_ctr_clamp),
            ctr_clamp=float(coder.ctr_clamp)))


def build_detector(cfg,
                   checkpoint: Optional[str] = None,
                   config_path: str = 'config') -> Tuple[nn.Module, list]:
    """The config's model in eval mode with the checkpoint's weights.

    Returns:
        (model, class names). Without a checkpoint the weights are the
        model's initialisation (call ``init_weights`` yourself) and the
        classes come from the config.
    """
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.focal_retina  # noqa: F401  (registers components)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(copy.deepcopy(cfg.model))
    classes, meta = None, {}
    if checkpoint is not None:
        from ..engine.checkpoint import safe_load
        try:
            ckpt = safe_load(checkpoint, map_location='cpu')
        except Exception as exc:
            raise DeployError(f'cannot load checkpoint {checkpoint!r}: '
                              f'{type(exc).__name__}: {exc}') from None
        state = _state_dict(ckpt, checkpoint)
        check_fit(model, state, checkpoint, config_path)
        model.load_state_dict(state)
        meta = ckpt.get('meta') or {} if isinstance(ckpt, dict) else {}
        meta = meta.get('dataset_meta') or {}
    meta = meta if meta.get('classes') else _config_meta(cfg)
    classes = list(meta['classes']) if meta.get('classes') else None
    num = int(model.bbox_head.num_classes)
    if classes is None:
        classes = [f'class_{i}' for i in range(num)]
    if len(classes) != num:
        raise DeployError(f'{len(classes)} class names ({classes[:4]}...) '
                          f'but the head of {config_path!r} has {num} '
                          'classes')
    # As DetInferencer sets it; the palette travels to the drawing.
    model.dataset_meta = dict(classes=classes, palette=meta.get('palette'))
    return model.eval(), classes


def fixed_size_difference(model: nn.Module,
                          cfg,
                          shape: Sequence[int],
                          seed: int = 0) -> dict:
    """What padding to a fixed ``shape`` changes, measured on a probe.

    A fixed-size file pads every input up to ``shape``; PyTorch pads only
    to the ``pad_size_divisor``. The convolutions then see the padded
    region's features (not zeros) near the right and bottom border, and the
    head has extra positions there. The probe is a random image 0.6 times
    as wide as ``shape`` (so that it needs the extra padding). The
    reference is mmdet on the original probe (test pipeline and
    ``test_step``); the fixed-size side is the model on the probe padded to
    ``shape`` (as the file gets it) with mmdet's ``predict_by_feat``, which
    the file's post-processing reproduces.

    Args:
        model: The detector in eval mode.
        cfg: Its config (test pipeline).
        shape: (H, W) of the fixed input.
        seed: Seed of the probe image.

    Returns:
        ``probe_shape`` (h, w of the probe), ``resized_shape``,
        ``max_score_diff`` (largest |sigmoid score difference| over every
        anchor and class of the image's positions), ``detections_ref``
        (PyTorch's), ``detections_fixed``, ``unmatched`` and
        ``max_det_score_diff`` (:func:`.parity.match_detections`).
    """
    import numpy as np

    from projects.focal_retina_runtime.preprocess import preprocess
    from .parity import inference_pipeline, match_detections, pytorch_reference
    h, w = int(shape[0]), int(shape[1])
    probe = np.random.default_rng(seed).integers(
        0, 256, (h, max(1, int(w * 0.6)), 3), dtype=np.uint8)
    preprocess_cfg = preprocess_meta(model, cfg)
    batch, metas = preprocess([probe], preprocess_cfg)
    if batch.shape[2] > h or batch.shape[3] > w:
        raise DeployError(f'the probe image resizes to {batch.shape[2:]}, '
                          f'larger than the fixed input {h}x{w}')
    fixed = np.full((1, 3, h, w),
                    preprocess_cfg.get('pad_value', 0),
                    dtype=np.float32)
    fixed[:, :, :batch.shape[2], :batch.shape[3]] = batch
    _, ref = pytorch_reference(model, inference_pipeline(cfg), probe)
    with torch.no_grad():
        cls_ref, _ = model.bbox_head(
            model.extract_feat(torch.from_numpy(batch)))
        cls_fix, box_fix = model.bbox_head(
            model.extract_feat(torch.from_numpy(fixed)))
        dets = model.bbox_head.predict_by_feat(
            cls_fix, box_fix, batch_img_metas=metas, rescale=True)[0]
    ours = {k: v.numpy() for k, v in dets.to_dict().items()}
    score_diff = max(
        float((a.sigmoid() -
               b[..., :a.shape[2], :a.shape[3]].sigmoid()).abs().max())
        for a, b in zip(cls_ref, cls_fix))
    stats = match_detections(ours, ref)
    return dict(
        probe_shape=list(probe.shape[:2]),
        resized_shape=list(metas[0]['img_shape']),
        max_score_diff=score_diff,
        detections_ref=stats['count_ref'],
        detections_fixed=stats['count_ours'],
        unmatched=stats['unmatched'],
        max_det_score_diff=stats['max_score_diff'])


def export_onnx(model: nn.Module,
                cfg,
                classes: Sequence[str],
                out: str,
                shape: Optional[Sequence[int]] = None,
                dynamic: bool = True,
                opset: int = DEFAULT_OPSET,
                with_postprocess: bool = False,
                source: Optional[dict] = None) -> dict:
    """Writes ``out`` and returns its metadata.

    Args:
        model: The detector (eval mode), e.g. from :func:`build_detector`.
        cfg: Its config (test pipeline, for the resize).
        classes: Class names in label order.
        out: Path of the ``.onnx`` file.
        shape: (H, W) of the example input; with ``dynamic=False`` the
            graph's fixed input size (a multiple of the pad divisor).
        dynamic: Dynamic batch and image size.
        opset: ONNX opset, :data:`MIN_OPSET` (:data:`MIN_OPSET_POSTPROCESS`
            with ``with_postprocess``) to the exporter's maximum.
        with_postprocess: End the graph with decoding and NMS.
        source: Extra provenance for the metadata (config, checkpoint).
    """
    import onnx
    from torch.onnx import _constants
    max_opset = _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    floor, needs = (MIN_OPSET_POSTPROCESS,
                    'NonMaxSuppression and TopK with a k input') \
        if with_postprocess else (MIN_OPSET,
                                  'Upsample to the FPN\'s output sizes')
    if not floor <= opset <= max_opset:
        graph = 'with --with-postprocess' if with_postprocess else \
            'of raw outputs'
        raise DeployError(
            f'opset {opset} is not supported: the graph {graph} needs opset '
            f'>= {floor} ({needs}) and torch\'s exporter writes at most '
            f'{max_opset}')
    model = model.eval()
    head = head_meta(model)
    test_cfg = copy.deepcopy(dict(model.bbox_head.test_cfg))
    h, w = shape or (320, 256)
    images = torch.randn(1, 3, int(h), int(w))
    levels = range(head['num_levels'])
    if with_postprocess:
        from .graph_postprocess import PostprocessGraph
        module = PostprocessGraph(model, head, test_cfg)
        inputs = ['images', 'img_shapes', 'scale_factors']
        args = (images, torch.tensor([[h, w]],
                                     dtype=torch.float32), torch.ones(1, 2))
        outputs = ['batch_indices', 'boxes', 'scores', 'labels']
        axes = {n: {0: 'num_dets'} for n in outputs}
        axes.update(img_shapes={0: 'batch'}, scale_factors={0: 'batch'})
    else:
        module, inputs, args = RawOutputs(model), ['images'], (images, )
        outputs = [f'cls_score_{i}' for i in levels] + \
            [f'bbox_pred_{i}' for i in levels]
        axes = {
            n: {
                0: 'batch',
                2: f'height_{n[-1]}',
                3: f'width_{n[-1]}'
            }
            for n in outputs
        } if dynamic else {
            n: {
                0: 'batch'
            }
            for n in outputs
        }
    axes['images'] = {0: 'batch', 2: 'height', 3: 'width'} if dynamic \
        else {0: 'batch'}
    # The exporter restores the wrapper's mode afterwards, recursively: a
    # fresh wrapper (training=True) would leave the detector in train mode.
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TracerWarnings, deprecation
        try:
            torch.onnx.export(
                module,
                args,
                out,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False)
        except Exception as exc:
            line = (str(exc).strip().splitlines() or [''])[0]
            raise DeployError(f'export at opset {opset} failed: '
                              f'{type(exc).__name__}: {line}') from None
    meta = dict(
        classes=list(classes),
        palette=(getattr(model, 'dataset_meta', None) or {}).get('palette'),
        preprocess=preprocess_meta(model, cfg),
        head=head,
        test_cfg=test_cfg,
        postprocess_in_graph=with_postprocess,
        inputs=inputs,
        outputs=outputs,
        input_shape=None if dynamic else [int(h), int(w)],
        source=dict(
            source or {},
            opset=opset,
            torch=torch.__version__,
            onnx=onnx.__version__))
    proto = onnx.load(out)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, encode(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, out)
    return meta


def onnx_to_openvino_ir(src: str, out: str) -> dict:
    """Converts an exported ``.onnx`` file to an OpenVINO IR (``out``.xml
    and its ``.bin``), fp32 weights as they are, the metadata in the IR's
    ``rt_info`` where the runtime reads it.

    Returns:
        The metadata.
    """
    from projects.focal_retina_runtime.metadata import read_onnx_metadata
    meta = read_onnx_metadata(src)
    try:
        import openvino as ov
    except ImportError:
        raise DeployError('openvino is not installed: pip install -e '
                          '.[deploy]') from None
    model = ov.Core().read_model(src)
    # The ONNX front end keeps metadata_props under 'framework'; an IR
    # written here carries it at the top, as quantize.py's files do.
    meta.pop('format', None)
    model.set_rt_info(encode(meta), [META_KEY])
    # save_model would halve the weights to fp16 by default: the IR must
    # compute what the .onnx file computes.
    ov.save_model(model, out, compress_to_fp16=False)
    return meta
