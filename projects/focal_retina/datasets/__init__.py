from .checked_coco import AnnotationError, CheckedCocoDataset
from .synthetic_shapes import (SHAPE_CLASSES, ShapesSpec,
                               SyntheticShapesDataset, generate_shapes_dataset,
                               render_image)
from .transforms import RandomRot90

__all__ = [
    'AnnotationError', 'CheckedCocoDataset', 'RandomRot90', 'SHAPE_CLASSES',
    'ShapesSpec', 'SyntheticShapesDataset', 'generate_shapes_dataset',
    'render_image'
]
