from .coco_metric import ZeroIfEmptyCocoMetric
from .testdev import CocoTestDevSubmission, validate_submission

__all__ = [
    'CocoTestDevSubmission', 'ZeroIfEmptyCocoMetric', 'validate_submission'
]
