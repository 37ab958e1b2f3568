"""The two models of the end-to-end benchmark and one step of each.

``stock`` is mmdet 3.3's own ``retinanet_r50_fpn_1x_coco.py`` read from the
installed package, ``ours`` is ``configs/retina_r50_fpn_1x.py``; both are
built with the backbone's ``init_cfg`` off and then share every weight.
"""
import contextlib
import copy
import math
import os.path as osp
from typing import Dict, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
OUR_CONFIG = osp.join(ROOT, 'configs', 'retina_r50_fpn_1x.py')
MODEL_NAMES = ('stock', 'ours')
OPTIONS = ('fp32', 'bf16', 'channels_last', 'fuse_conv_bn', 'compile')
PHASES = ('train', 'infer')
BOXES_PER_IMAGE = 7  # COCO's mean


def stock_config_path() -> str:
    """mmdet's own RetinaNet R-50 1x config, from the installed package."""
    import mmdet
    return osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'configs', 'retinanet',
        'retinanet_r50_fpn_1x_coco.py')


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def quiet_mmengine() -> None:
    """init_weights logs every parameter, FlopAnalyzer every unsupported
    op, at INFO / WARNING level: keep the benchmark output readable."""
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('ERROR')


def build_model(name: str, seed: int = 0) -> torch.nn.Module:
    """One of the two models, randomly initialised with ``seed``."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.focal_retina  # noqa: F401  (registers components)
    from projects.focal_retina.engine.cli import read_config
    init_default_scope('mmdet')
    path = stock_config_path() if name == 'stock' else OUR_CONFIG
    cfg = read_config(path)
    cfg.model.backbone.init_cfg = None  # no pretrained weights here
    quiet_mmengine()
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def copy_shared_weights(src: torch.nn.Module,
                        dst: torch.nn.Module) -> Tuple[int, int]:
    """Copies every tensor of ``src`` whose name and shape ``dst`` has.

    Returns:
        (tensors copied, tensors of ``dst`` left as they were).
    """
    theirs = dst.state_dict()
    shared = {
        k: v
        for k, v in src.state_dict().items()
        if k in theirs and theirs[k].shape == v.shape
    }
    dst.load_state_dict(shared, strict=False)
    return len(shared), len(theirs) - len(shared)


def make_data(images: int, h: int, w: int, seed: int = 0) -> dict:
    """Raw model inputs (uint8 images, samples with 7 random boxes of
    32-300 px), as a dataloader hands them to ``train_step``."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(images):
        inputs.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        wh = torch.rand(BOXES_PER_IMAGE, 2, generator=g) * 268 + 32
        wh = torch.minimum(wh, torch.tensor([w - 1., h - 1.]))
        xy = torch.rand(
            BOXES_PER_IMAGE, 2, generator=g) * (
                torch.tensor([w, h]) - wh)
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, 80, (BOXES_PER_IMAGE, ), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def calibrate_bias(model: torch.nn.Module,
                   data: dict,
                   pass_fraction: float,
                   seed: int = 0) -> float:
    """The classification bias with which ``pass_fraction`` of the
    (anchor, class) scores of ``data`` exceed the test score threshold.

    Random heads give logits of bias + tiny noise; the bias is shifted so
    that the noise's upper ``pass_fraction`` quantile lands on the
    threshold (estimated on a sample of 10^6 scores).
    """
    model.eval()
    with torch.no_grad():
        batch = model.data_preprocessor(copy.deepcopy(data), False)
        cls_scores, _ = model(batch['inputs'], mode='tensor')
    logits = torch.cat([c.flatten() for c in cls_scores]).float()
    g = torch.Generator(device=logits.device).manual_seed(seed)
    sample = logits[torch.randint(
        0,
        logits.numel(), (min(logits.numel(), 10**6), ),
        generator=g,
        device=logits.device)]
    q = torch.quantile(sample, 1.0 - pass_fraction).item()
    thr = model.bbox_head.test_cfg.score_thr
    bias = model.bbox_head.retina_cls.bias
    return bias.mean().item() + math.log(thr / (1 - thr)) - q


def set_cls_bias(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(value)


def build_pair(device: str, data: dict,
               pass_fraction: float) -> Tuple[Dict, dict]:
    """Both models with the same weights, on ``device``, and facts about
    them (copied tensors, bias, the fraction of scores that passes)."""
    models = {name: build_model(name) for name in MODEL_NAMES}
    copied, kept = copy_shared_weights(models['stock'], models['ours'])
    for model in models.values():
        model.to(device)
    bias = calibrate_bias(models['stock'], data, pass_fraction)
    for model in models.values():
        set_cls_bias(model, bias)
    info = dict(
        copied_tensors=copied,
        own_tensors=kept,
        cls_bias=bias,
        pass_fraction=pass_fraction)
    return models, info


@contextlib.contextmanager
def autocast(device: str, enabled: bool):
    if not enabled:
        yield
        return
    with torch.autocast(device, dtype=torch.bfloat16):
        yield


def train_step(model, optimizer, data: dict, bf16: bool, channels_last: bool,
               device: str) -> float:
    """One training step as mmengine's ``train_step`` runs it (its
    ``OptimWrapper.update_params`` is zero_grad, backward, step); returns
    the loss."""
    batch = model.data_preprocessor(data, True)
    if channels_last:
        batch['inputs'] = batch['inputs'].contiguous(
            memory_format=torch.channels_last)
    with autocast(device, bf16):
        losses = model(**batch, mode='loss')
    loss, _ = model.parse_losses(losses)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def infer_step(model, data: dict, bf16: bool, channels_last: bool,
               device: str) -> int:
    """``test_step`` (preprocessor, forward, post-processing with rescale);
    returns the number of detections (so that nothing is skipped).

    With ``bf16`` the network (backbone, FPN, head) runs under autocast
    and the post-processing in float32: mmcv's CPU ``nms`` has no bfloat16
    kernel ("expected scalar type Float but found BFloat16"), so mmdet's
    ``predict`` under autocast fails as soon as one box passes the score
    threshold.
    """
    with torch.no_grad():
        batch = model.data_preprocessor(data, False)
        inputs, samples = batch['inputs'], batch['data_samples']
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if not bf16:
            results = model(inputs, samples, mode='predict')
        else:  # SingleStageDetector.predict, split at the head's output
            with autocast(device, True):
                outs = model.bbox_head(model.extract_feat(inputs))
            outs = [[t.float() for t in level] for level in outs]
            preds = model.bbox_head.predict_by_feat(
                *outs,
                batch_img_metas=[s.metainfo for s in samples],
                rescale=True)
            results = model.add_pred_to_datasample(samples, preds)
    return sum(len(r.pred_instances) for r in results)


def make_optimizer(model) -> torch.optim.Optimizer:
    """The paper's / mmdet's SGD (momentum 0.9, wd 1e-4) at lr 0."""
    return torch.optim.SGD(
        model.parameters(), lr=0.0, momentum=0.9, weight_decay=1e-4)


def apply_option(model, option: str) -> None:
    """Puts ``model`` in the layout / compiled form of ``option``."""
    fmt = torch.channels_last if option == 'channels_last' else \
        torch.contiguous_format
    model.to(memory_format=fmt)
    if option == 'compile':
        model.backbone = torch.compile(model.backbone)
        model.neck = torch.compile(model.neck)
        model.bbox_head.forward = torch.compile(model.bbox_head.forward)
