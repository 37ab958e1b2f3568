from .coco_metric import ZeroIfEmptyCocoMetric
from .testdev import (CocoTestDevSubmission, submission_name,
                      submission_name_problem, validate_submission)

__all__ = [
    'CocoTestDevSubmission', 'ZeroIfEmptyCocoMetric', 'submission_name',
    'submission_name_problem', 'validate_submission'
]
