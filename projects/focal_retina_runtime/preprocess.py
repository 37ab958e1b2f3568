"""The test-time input pipeline in NumPy + OpenCV, as mmdet runs it.

For a BGR uint8 image (OpenCV's / mmcv's ``imread``): the test pipeline's
``Resize`` (mmcv's ``imrescale`` / ``imresize``, OpenCV interpolation),
then ``DetDataPreprocessor``: BGR→RGB when ``bgr_to_rgb``, float32,
``(x - mean) / std``, and zero padding (``pad_value``) of the *normalised*
batch at the bottom/right to a multiple of ``pad_size_divisor``. The
parameters are the ``preprocess`` entry of the ``.onnx`` metadata.
"""
from typing import List, Sequence, Tuple

import numpy as np

# mmcv.image.geometric's interpolation names → OpenCV flags.
CV2_INTERP = dict(nearest=0, bilinear=1, bicubic=2, area=3, lanczos=4)


def rescale_size(w: int, h: int, scale: Sequence[int]) -> Tuple[int, int]:
    """mmcv's ``rescale_size`` for a (long, short) edge pair: the largest
    size within both bounds at the same aspect ratio.

    Returns:
        (new_w, new_h).
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)


def resize(img: np.ndarray, resize_cfg: dict) -> Tuple[np.ndarray, tuple]:
    """mmdet's ``Resize`` (``scale`` given, ``keep_ratio`` or not).

    Args:
        img: (H, W, 3) uint8 image.
        resize_cfg: ``scale`` (w, h), ``keep_ratio``, ``interpolation``.

    Returns:
        The resized image and its ``scale_factor`` (w_scale, h_scale).
    """
    import cv2
    h, w = img.shape[:2]
    if resize_cfg['keep_ratio']:
        size = rescale_size(w, h, resize_cfg['scale'])
    else:
        size = tuple(int(s) for s in resize_cfg['scale'])
    interp = CV2_INTERP[resize_cfg.get('interpolation', 'bilinear')]
    out = cv2.resize(img, size, interpolation=interp)
    new_h, new_w = out.shape[:2]
    return out, (new_w / w, new_h / h)


def preprocess(images: Sequence[np.ndarray],
               cfg: dict) -> Tuple[np.ndarray, List[dict]]:
    """A padded, normalised batch and the image metas post-processing needs.

    Args:
        images: BGR uint8 images (H_i, W_i, 3).
        cfg: The ``preprocess`` metadata: ``mean``, ``std``, ``bgr_to_rgb``,
            ``pad_size_divisor``, ``pad_value``, ``resize`` (or None).

    Returns:
        (B, 3, H, W) float32 batch and, per image, ``ori_shape``,
        ``img_shape`` (h, w after resizing) and ``scale_factor``.
    """
    resized, metas = [], []
    for img in images:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'expected an (H, W, 3) BGR image, got shape '
                             f'{tuple(img.shape)}')
        out, factor = (
            resize(img, cfg['resize']) if cfg.get('resize') else
            (img, (1.0, 1.0)))
        if cfg.get('bgr_to_rgb'):
            out = out[..., ::-1]
        x = out.astype(np.float32)
        if cfg.get('mean') is not None:
            x = (x - np.asarray(cfg['mean'], np.float32)) / np.asarray(
                cfg['std'], np.float32)
        resized.append(x)
        metas.append(
            dict(
                ori_shape=img.shape[:2],
                img_shape=out.shape[:2],
                scale_factor=factor))
    div = int(cfg.get('pad_size_divisor') or 1)
    height = max(x.shape[0] for x in resized)
    width = max(x.shape[1] for x in resized)
    height, width = -(-height // div) * div, -(-width // div) * div
    batch = np.full((len(resized), 3, height, width),
                    cfg.get('pad_value', 0),
                    dtype=np.float32)
    for i, x in enumerate(resized):
        batch[i, :, :x.shape[0], :x.shape[1]] = x.transpose(2, 0, 1)
    return batch, metas
