"""int8 post-training quantisation of an exported model, with its AP.

``tools/deployment/quantize.py`` drives these: calibration inputs are
images of a split of the config (or a folder of images) read through the
config's test pipeline and normalised with the file's own metadata, so
that the calibration sees exactly what the runtime feeds the graph;
:func:`quantize` inserts the quantisers; :func:`evaluate` runs the fp32
and the int8 model over the test set with the config's evaluator.

Two outputs: an OpenVINO IR (``.xml``, quantised by NNCF, run by OpenVINO)
or an ``.onnx`` file with QuantizeLinear / DequantizeLinear pairs
(onnxruntime's ``quantize_static``, run by onnxruntime; OpenVINO runs it
too). Either keeps the metadata of the fp32 file, plus a
``quantization`` entry.

What stays in higher precision: both quantise the inputs and weights of
every convolution (per-channel int8 weights, per-tensor activations); the
additions, the FPN's upsampling and the stem's max-pooling take quantised
inputs too (:func:`precision_summary` lists them). GroupNorm, where a head
has it, and every graph output stay in floating point: the sigmoid, the
box decoding and NMS run on fp32 logits and deltas. The head's last two
convolutions (``retina_cls``, ``retina_reg``; :data:`HEAD_OUTPUT_CONVS`)
were the candidates for fp32, as the score threshold and the ranking read
their outputs directly; ``--keep-head-fp32`` leaves them in fp32, but on
the models measured quantising them cost no AP (docs/deployment.md).
"""
import contextlib
import copy
import io
import os
import os.path as osp
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from projects.focal_retina_runtime import DeployError, OnnxDetector
from projects.focal_retina_runtime.metadata import META_KEY, decode, encode
from projects.focal_retina_runtime.preprocess import preprocess

# How the head's last convolutions are named in torch's ONNX export
# (mmdet's RetinaHead attributes ``retina_cls`` / ``retina_reg``): node
# names end with '/retina_cls/Conv'.
HEAD_OUTPUT_CONVS = ('retina_cls', 'retina_reg')
IMG_EXT = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def test_pipeline(cfg) -> Any:
    """The config's test pipeline on an image file, without annotations
    (``LoadImageFromFile`` → ``Resize`` → ``PackDetInputs``)."""
    from mmcv.transforms import Compose
    loader = cfg.get('test_dataloader') or {}
    steps = [
        t for t in copy.deepcopy((loader.get('dataset') or {}).get('pipeline')
                                 or cfg.get('test_pipeline'))
        if t['type'].split('.')[-1] != 'LoadAnnotations'
    ]
    return Compose(steps)


def split_images(cfg, split: str) -> List[str]:
    """The image paths of the config's ``{split}_dataloader`` dataset."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    loader = cfg.get(f'{split}_dataloader')
    if not loader or not loader.get('dataset'):
        raise DeployError(f'the config has no {split}_dataloader.dataset')
    dataset_cfg = copy.deepcopy(loader['dataset'])
    while isinstance(dataset_cfg.get('dataset'), dict):  # wrappers
        dataset_cfg = dataset_cfg['dataset']
    dataset_cfg['pipeline'] = []
    dataset = DATASETS.build(dataset_cfg)
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def folder_images(folder: str) -> List[str]:
    """The images of a folder, in name order."""
    if not osp.isdir(folder):
        raise DeployError(f'calibration folder {folder!r} does not exist')
    found = [
        osp.join(folder, f) for f in sorted(os.listdir(folder))
        if f.lower().endswith(IMG_EXT)
    ]
    if not found:
        raise DeployError(f'calibration folder {folder!r} holds no images '
                          f'({", ".join(IMG_EXT)})')
    return found


def spread(paths: Sequence[str], num: int) -> List[str]:
    """``num`` paths spread evenly over ``paths`` (all when fewer)."""
    if num >= len(paths):
        return list(paths)
    idx = np.unique(np.linspace(0, len(paths) - 1, num).round().astype(int))
    return [paths[i] for i in idx]


def calibration_inputs(paths: Sequence[str], cfg,
                       meta: dict) -> List[np.ndarray]:
    """The graph's inputs for ``paths``: each image through the config's
    test pipeline (decoding, resize), then normalised and padded with the
    file's ``preprocess`` metadata, one (1, 3, H, W) float32 batch each.
    """
    pipeline = test_pipeline(cfg)
    pre = dict(meta['preprocess'], resize=None)  # resized by the pipeline
    out = []
    for i, path in enumerate(paths):
        data = pipeline(dict(img_path=path, img_id=i))
        chw = data['inputs'].numpy()  # BGR, resized, uint8
        batch, _ = preprocess([np.ascontiguousarray(chw.transpose(1, 2, 0))],
                              pre)
        fixed = meta.get('input_shape')
        if fixed:  # a fixed-size file: padded up to its size
            padded = np.full(batch.shape[:2] + tuple(fixed),
                             pre.get('pad_value', 0), np.float32)
            padded[:, :, :batch.shape[2], :batch.shape[3]] = batch
            batch = padded
        out.append(batch)
    return out


def head_output_convs(names: Sequence[str]) -> List[str]:
    """The node names of the head's last convolutions among ``names``.

    The head runs once per level and torch's exporter names each copy
    after the module with a level suffix: ``/bbox_head/retina_cls/Conv``,
    ``/bbox_head/retina_cls_1/Conv`` ...
    """
    pattern = re.compile(r'/(?:%s)(?:_\d+)?/' % '|'.join(HEAD_OUTPUT_CONVS))
    return [n for n in names if pattern.search(n + '/')]


def quantize(path: str,
             inputs: Sequence[np.ndarray],
             fmt: str,
             keep_head_fp32: bool = False,
             bias_correction: bool = True) -> Tuple[Any, List[str]]:
    """Post-training int8 quantisation of an exported fp32 file.

    ``fmt='openvino'``: NNCF's ``quantize`` on the file as OpenVINO reads
    it (mixed preset: symmetric per-channel weights, asymmetric
    activations; its fast bias correction), an ``openvino.Model``.
    ``fmt='onnx'``: onnxruntime's ``quantize_static`` (QDQ format, uint8
    activations, per-channel int8 weights, min-max calibration), an
    ``onnx.ModelProto``: the layout onnxruntime's int8 kernels fuse (NNCF's
    ONNX output ran at twice this one's time under onnxruntime).

    Args:
        path: The fp32 ``.onnx`` file.
        inputs: Calibration batches (:func:`calibration_inputs`).
        fmt: ``'openvino'`` or ``'onnx'``.
        keep_head_fp32: Leave :data:`HEAD_OUTPUT_CONVS` in fp32.
        bias_correction: NNCF's fast bias correction (``False``: the
            same graph sooner, for speed measurements on random inputs).

    Returns:
        (the quantised model, the node names kept in fp32 by request).
    """
    import onnx
    if fmt not in ('openvino', 'onnx'):
        raise DeployError(f'format {fmt!r}: expected openvino or onnx')
    if len(inputs) == 0:
        raise DeployError('no calibration images')
    graph = onnx.load(path, load_external_data=False).graph
    kept = head_output_convs([n.name
                              for n in graph.node]) if keep_head_fp32 else []
    if keep_head_fp32 and not kept:
        raise DeployError(f'{path}: no node of {HEAD_OUTPUT_CONVS} found '
                          'to keep in fp32')
    if fmt == 'onnx':
        return _quantize_onnxruntime(path, inputs, graph.input[0].name,
                                     kept), kept
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise DeployError('nncf and openvino are needed: pip install '
                          '-e .[deploy]') from None
    model = ov.Core().read_model(path)
    # OpenVINO's ONNX front end names a Conv node's convolution
    # '<node>/WithoutBiases' and its bias addition '<node>': both stay.
    ignored = None
    if kept:
        ignored = nncf.IgnoredScope(
            patterns=[re.escape(n) + '(/.*)?$' for n in kept], validate=False)
    from nncf.quantization.advanced_parameters import \
        AdvancedQuantizationParameters
    quantized = nncf.quantize(
        model,
        nncf.Dataset(list(inputs)),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(inputs),
        ignored_scope=ignored,
        advanced_parameters=AdvancedQuantizationParameters(
            disable_bias_correction=not bias_correction))
    return quantized, kept


def _quantize_onnxruntime(path: str, inputs: Sequence[np.ndarray], feed: str,
                          kept: Sequence[str]) -> Any:
    """onnxruntime's ``quantize_static`` of ``path`` (see :func:`quantize`).
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):

        def __init__(self) -> None:
            self.batches = iter(inputs)

        def get_next(self) -> Optional[dict]:
            batch = next(self.batches, None)
            return None if batch is None else {feed: batch}

    with tempfile.TemporaryDirectory() as tmp:
        pre, out = osp.join(tmp, 'pre.onnx'), osp.join(tmp, 'int8.onnx')
        # Constant folding and shape inference first, as onnxruntime's
        # quantisation guide asks (the symbolic shape pass cannot follow
        # the dynamic sizes and is skipped).
        quant_pre_process(path, pre, skip_symbolic_shape=True)
        quantize_static(
            pre,
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # The convolutions only, as NNCF's CPU preset does for these
            # graphs' element-wise ops: GroupNorm's scale and shift (Mul,
            # Add) stay in fp32.
            op_types_to_quantize=['Conv'],
            nodes_to_exclude=list(kept))
        return onnx.load(out)


# Operations that only read a tensor's shape or move its values: an int8
# input there says nothing about the arithmetic's precision.
SHAPE_OPS = ('ShapeOf', 'Shape', 'Reshape', 'Gather', 'Concat', 'Squeeze',
             'Unsqueeze', 'Transpose')


def _ov_source(node: Any) -> str:
    """The type of the operation behind ``node``, with a saved IR's
    decompression of int8 weights (an i8 / u8 ``Constant``, ``Convert``,
    ``Subtract``, ``Multiply``) read as the ``FakeQuantize`` it was."""
    seen = node
    for _ in range(4):
        kind = seen.get_type_name()
        if kind == 'Constant':
            return ('FakeQuantize' if seen.get_element_type().get_type_name()
                    in ('i8', 'u8', 'i4', 'u4') else 'Constant')
        if kind not in ('Convert', 'Subtract', 'Multiply'):
            break
        seen = seen.input_value(0).get_node()
    return node.get_type_name()


def precision_summary(model: Any, fmt: str) -> Dict[str, Any]:
    """Which convolutions of a quantised model have int8 weights, and which
    other operations read a quantised input.

    A weight is int8 when it comes through a quantiser (OpenVINO's
    ``FakeQuantize``; ONNX's ``DequantizeLinear``).

    Returns:
        ``convs``: how many convolutions; ``fp32_convs``: the names of
        those with fp32 weights; ``other_int8``: operation type → count of
        the other operations (shape operations aside) with a quantised
        input.
    """
    convs, fp32_convs, other = 0, [], {}
    if fmt == 'openvino':
        quantiser, conv_type = 'FakeQuantize', 'Convolution'
        nodes = [(op.get_type_name(), op.get_friendly_name(), [
            _ov_source(op.input_value(i).get_node())
            for i in range(op.get_input_size())
        ]) for op in model.get_ordered_ops()]
    else:
        quantiser, conv_type = 'DequantizeLinear', 'Conv'
        producer = {o: n.op_type for n in model.graph.node for o in n.output}
        nodes = [(n.op_type, n.name, [producer.get(i) for i in n.input])
                 for n in model.graph.node]
    skip = ('FakeQuantize', 'QuantizeLinear', 'DequantizeLinear', 'Constant',
            'Parameter', 'Result', 'Convert') + SHAPE_OPS
    for kind, name, sources in nodes:
        if kind == conv_type:
            convs += 1
            if len(sources) < 2 or sources[1] != quantiser:
                fp32_convs.append(name)
        elif kind in ('Multiply',
                      'Subtract') and set(sources) <= {quantiser, 'Constant'}:
            continue  # an IR's decompression of int8 weights
        elif kind not in skip and quantiser in sources:
            other[kind] = other.get(kind, 0) + 1
    return dict(
        convs=convs,
        fp32_convs=fp32_convs,
        other_int8=dict(sorted(other.items())))


def with_metadata(model: Any, fmt: str, meta: dict) -> Any:
    """``model`` carrying ``meta`` (our metadata key) as the runtime reads
    it: an IR's ``rt_info``, an ``.onnx``'s ``metadata_props``."""
    text = encode(meta)
    if fmt == 'openvino':
        model.set_rt_info(text, [META_KEY])
        return model
    props = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, text
    return model


def save(model: Any, fmt: str, out: str) -> None:
    """Writes an IR (``out`` .xml, weights beside it as .bin, fp32 weights
    kept as they are) or an ``.onnx``."""
    if fmt == 'openvino':
        import openvino as ov
        ov.save_model(model, out, compress_to_fp16=False)
    else:
        import onnx
        onnx.save(model, out)
    decode_saved(out)  # the runtime must be able to read it back


def decode_saved(path: str) -> dict:
    """The metadata of a file just written, read as the runtime reads it."""
    if path.lower().endswith('.xml'):
        import openvino as ov
        model = ov.Core().read_model(path)
        props = {META_KEY: model.get_rt_info([META_KEY]).astype(str)}
    else:
        from projects.focal_retina_runtime import read_onnx_metadata
        return read_onnx_metadata(path)
    return decode(props, path)


def evaluate(
    detectors: Dict[str, OnnxDetector],
    cfg,
    num_images: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None
) -> Dict[str, Dict[str, float]]:
    """The config's test evaluator on each detector's detections of the
    config's test set (images as the runtime reads them; each image
    pre-processed once and run through every detector).

    Args:
        detectors: Name → detector.
        cfg: The config (test dataset and evaluator).
        num_images: Only the first ``num_images`` (None: all).
        progress: Called with (done, total) after each image.

    Returns:
        Name → the evaluator's metrics (``coco/bbox_mAP`` ...).
    """
    import torch
    from mmdet.registry import DATASETS, METRICS
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    from projects.focal_retina_runtime import read_image
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset_cfg['pipeline'] = []
    dataset = DATASETS.build(dataset_cfg)
    first = next(iter(detectors.values()))
    metrics = {}
    for name in detectors:
        metrics[name] = METRICS.build(copy.deepcopy(cfg.test_evaluator))
        metrics[name].dataset_meta = dict(classes=tuple(first.classes))
    total = len(dataset) if num_images is None else min(
        num_images, len(dataset))
    for i in range(total):
        info = dataset.get_data_info(i)
        bgr = read_image(info['img_path'])
        if bgr is None:
            raise DeployError(f'cannot read {info["img_path"]}')
        batch, metas = first.prepare([bgr])
        sample = dict(
            img_id=info['img_id'],
            ori_shape=bgr.shape[:2],
            img_path=info['img_path'])
        for name, det in detectors.items():
            dets = det.run_batch(batch, metas)[0]
            sample['pred_instances'] = InstanceData(
                **{
                    k: torch.from_numpy(np.asarray(v))
                    for k, v in dets.items()
                }).to_dict()
            metrics[name].process({}, [dict(sample)])
        if progress is not None:
            progress(i + 1, total)
    # pycocotools prints its tables and mmengine logs each evaluation:
    # the tool prints the APs itself.
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return {name: m.evaluate(total) for name, m in metrics.items()}
    finally:
        logger.setLevel(level)


def ap_key(metrics: Dict[str, float]) -> str:
    """The evaluator's main AP key (``coco/bbox_mAP``)."""
    for key in metrics:
        if key.endswith('bbox_mAP'):
            return key
    raise DeployError(f'the test evaluator reports no bbox_mAP '
                      f'({sorted(metrics)})')


def gate(ap_fp32: float, ap_int8: float, max_drop: float) -> bool:
    """Whether the int8 model may be written: its AP is at most
    ``max_drop`` below the fp32 model's.

    The evaluator rounds APs to 3 decimals, so a drop of exactly
    ``max_drop`` is common; its float difference (0.5 - 0.49 is
    0.010000000000000009) must not refuse it.
    """
    return ap_fp32 - ap_int8 <= max_drop + 1e-9
