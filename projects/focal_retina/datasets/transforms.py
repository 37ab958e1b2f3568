"""Data transforms mmdet lacks, for photos without an "up" direction.

Overhead (aerial, satellite) and microscope photos look the same rotated by
any multiple of 90 degrees. mmdet's ``RandomFlip`` covers the flips
(``direction=['horizontal', 'vertical', 'diagonal']``), but its ``Rotate``
turns the image inside a canvas of the same size, so a 90 degree turn of a
non-square photo cuts off its corners (and the boxes in them).
:class:`RandomRot90` turns the whole canvas, width and height swapped, and
its boxes with it, exactly.
"""
from typing import Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RandomRot90(BaseTransform):
    """Rotates the image and its boxes by ``k`` x 90 degrees
    counter-clockwise, ``k`` drawn from ``turns``.

    Rotated with :func:`numpy.rot90`: a point ``(x, y)`` of a ``w`` x ``h``
    image goes to ``(y, w - x)`` for one turn, ``(w - x, h - y)`` for two
    and ``(h - y, x)`` for three (pixel-edge coordinates, as mmdet's boxes).
    With the defaults (each ``k`` of 0-3 drawn with probability 1/4) and
    ``RandomFlip`` (horizontal, p = 0.5) after it, each of the 8 symmetries
    of the square is equally likely.

    Required keys: ``img``. Modified keys: ``img``, ``img_shape``,
    ``gt_bboxes`` (if present), ``gt_seg_map`` (if present),
    ``homography_matrix`` (multiplied in, as mmdet's geometric transforms
    do). Added keys: ``rot90_k``.

    Args:
        prob: Probability of turning the image at all.
        turns: The numbers of quarter turns to draw from (uniformly) when
            it is turned. Default: ``(1, 2, 3)``.
    """

    def __init__(self,
                 prob: float = 0.75,
                 turns: Sequence[int] = (1, 2, 3)) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'RandomRot90: prob={prob!r}, expected a value '
                             'in [0, 1]')
        turns = tuple(turns)
        if not turns or any(not isinstance(k, int) or isinstance(k, bool)
                            or not 1 <= k <= 3 for k in turns):
            raise ValueError(f'RandomRot90: turns={turns!r}, expected a '
                             'non-empty sequence of 1, 2 and/or 3')
        self.prob = prob
        self.turns = turns

    def _draw(self) -> int:
        if np.random.rand() >= self.prob:
            return 0
        return int(self.turns[np.random.randint(len(self.turns))])

    @staticmethod
    def matrix(k: int, w: int, h: int) -> np.ndarray:
        """The 3x3 homography of ``k`` quarter turns of a ``w`` x ``h``
        image (pixel-edge coordinates)."""
        k %= 4
        if k == 0:
            return np.eye(3, dtype=np.float32)
        if k == 1:  # (x, y) -> (y, w - x)
            m = [[0, 1, 0], [-1, 0, w], [0, 0, 1]]
        elif k == 2:  # (x, y) -> (w - x, h - y)
            m = [[-1, 0, w], [0, -1, h], [0, 0, 1]]
        else:  # (x, y) -> (h - y, x)
            m = [[0, -1, h], [1, 0, 0], [0, 0, 1]]
        return np.array(m, dtype=np.float32)

    def transform(self, results: dict) -> Optional[dict]:
        k = self._draw()
        results['rot90_k'] = k
        if k == 0:
            return results
        img = results['img']
        h, w = img.shape[:2]
        results['img'] = np.ascontiguousarray(np.rot90(img, k))
        results['img_shape'] = results['img'].shape[:2]
        if results.get('gt_seg_map') is not None:
            results['gt_seg_map'] = np.ascontiguousarray(
                np.rot90(results['gt_seg_map'], k))
        boxes = results.get('gt_bboxes')
        if boxes is not None:
            results['gt_bboxes'] = self._turn_boxes(boxes, k, w, h)
        m = self.matrix(k, w, h)
        if results.get('homography_matrix') is None:
            results['homography_matrix'] = m
        else:
            results['homography_matrix'] = m @ results['homography_matrix']
        return results

    @staticmethod
    def _turn_boxes(boxes, k: int, w: int, h: int):
        """Boxes (mmdet ``HorizontalBoxes`` or an (N, 4) x1y1x2y2 array)
        after ``k`` quarter turns of a ``w`` x ``h`` image."""
        tensor = getattr(boxes, 'tensor', None)
        xyxy = tensor if tensor is not None else boxes
        x1, y1, x2, y2 = (xyxy[:, i] for i in range(4))
        if k == 1:
            turned = [y1, w - x2, y2, w - x1]
        elif k == 2:
            turned = [w - x2, h - y2, w - x1, h - y1]
        else:
            turned = [h - y2, x1, h - y1, x2]
        if tensor is not None:
            import torch
            return type(boxes)(torch.stack(turned, dim=-1))
        return np.stack(turned, axis=-1).astype(xyxy.dtype)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(prob={self.prob}, '
                f'turns={self.turns})')
