from .checked_coco import AnnotationError, CheckedCocoDataset
from .synthetic_shapes import (SHAPE_CLASSES, ShapesSpec,
                               SyntheticShapesDataset, generate_shapes_dataset,
                               render_image)

__all__ = [
    'AnnotationError', 'CheckedCocoDataset', 'SHAPE_CLASSES', 'ShapesSpec',
    'SyntheticShapesDataset', 'generate_shapes_dataset', 'render_image'
]
