"""Reading images and drawing detections with OpenCV (no mmcv, no mmdet).

``tools/infer.py`` draws an ``.onnx`` file's detections with these, so that
running an exported model imports neither matplotlib (mmengine's
``Visualizer``) nor torch. The look follows mmdet 3.3's
``DetLocalVisualizer``: a box in its class's palette colour (the palette in
the file's metadata, else mmdet's seeded random palette), 3 px wide at
alpha 0.8, and the text ``class: score%`` in light grey on a black label at
the box's top-left corner, scaled with the box's area. It is a drawing of
the same boxes, not a pixel copy of matplotlib's rendering.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np

Color = Tuple[int, int, int]


def read_image(path: str) -> Optional[np.ndarray]:
    """The BGR uint8 image of a file, as ``mmcv.imread(path)`` reads it.

    mmcv's default (``cv2`` backend, ``flag='color'``) decodes the file's
    bytes with ``cv2.imdecode(..., cv2.IMREAD_COLOR)``; so does this.

    Returns:
        (H, W, 3) BGR image, or None when the file cannot be read or
        decoded.
    """
    import cv2
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    try:
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def get_palette(palette: Optional[Sequence[Sequence[int]]],
                num_classes: int) -> List[Color]:
    """RGB colours for ``num_classes`` labels: the given palette, else
    mmdet's ``get_palette(None, n)`` (NumPy's generator seeded with 42,
    the caller's random state left as it was)."""
    if palette:
        colors = [tuple(int(v) for v in c) for c in palette]
        if len(colors) >= num_classes:
            return colors
    state = np.random.get_state()
    np.random.seed(42)
    drawn = np.random.randint(0, 256, size=(num_classes, 3))
    np.random.set_state(state)
    return [tuple(int(v) for v in c) for c in drawn]


def _adaptive_scales(areas: np.ndarray,
                     min_area: int = 800,
                     max_area: int = 30000) -> np.ndarray:
    """mmdet's ``_get_adaptive_scales``: 0.5 for small boxes, 1 for
    large, linear in between."""
    scales = 0.5 + (areas - min_area) // (max_area - min_area)
    return np.clip(scales, 0.5, 1.0)


def draw_detections(rgb: np.ndarray,
                    bboxes: np.ndarray,
                    scores: np.ndarray,
                    labels: np.ndarray,
                    classes: Sequence[str],
                    palette: Optional[Sequence[Sequence[int]]] = None,
                    line_width: int = 3,
                    alpha: float = 0.8) -> np.ndarray:
    """The image with the detections drawn on it.

    Args:
        rgb: (H, W, 3) uint8 RGB image (not changed).
        bboxes: (n, 4) x1 y1 x2 y2 in the image's pixels.
        scores: (n,) scores in [0, 1].
        labels: (n,) class indices.
        classes: Class names by label.
        palette: RGB colour per class (None: mmdet's random palette).
        line_width: Box outline width in pixels.
        alpha: Opacity of the outlines.

    Returns:
        A new (H, W, 3) uint8 RGB image.
    """
    import cv2
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    if len(bboxes) == 0:
        return out
    labels = np.asarray(labels, np.int64)
    colors = get_palette(palette, max(len(classes), int(labels.max()) + 1))
    boxes = np.asarray(bboxes, np.float64)
    overlay = out.copy()
    for box, label in zip(boxes, labels):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(overlay, (x1, y1), (x2, y2), colors[label], line_width)
    out = cv2.addWeighted(overlay, alpha, out, 1 - alpha, 0)
    areas = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0])
    for box, score, label, scale in zip(boxes, scores, labels,
                                        _adaptive_scales(areas)):
        name = classes[label] if label < len(classes) else f'class {label}'
        text = f'{name}: {round(float(score) * 100, 1)}'
        # mmdet's 13 pt matplotlib text is about 0.45 of Hershey's unit.
        font_scale = 0.45 * float(scale)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX,
                                         font_scale, 1)
        x = int(box[0]) + line_width
        y = int(box[1]) + line_width
        cv2.rectangle(out, (x, y), (x + tw + 2, y + th + base + 2), (0, 0, 0),
                      -1)
        cv2.putText(out, text, (x + 1, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX,
                    font_scale, (200, 200, 200), 1, cv2.LINE_AA)
    return out
