from .synthetic_shapes import (SHAPE_CLASSES, ShapesSpec,
                               SyntheticShapesDataset, generate_shapes_dataset,
                               render_image)

__all__ = [
    'SHAPE_CLASSES', 'ShapesSpec', 'SyntheticShapesDataset',
    'generate_shapes_dataset', 'render_image'
]
