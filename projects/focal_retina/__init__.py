"""focal_retina: RetinaNet and the focal loss family on MMDetection 3.3.

Importing this package registers every component, so configs only need
``custom_imports=dict(imports=['projects.focal_retina'])``.
"""
from . import (datasets, engine, evaluation, losses, models,  # noqa: F401
               task_modules)

__version__ = '0.1.0'
