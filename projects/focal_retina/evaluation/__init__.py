from .coco_metric import ZeroIfEmptyCocoMetric
from .plots import (EvaluationRecord, confusion_matrix,
                    mmdet_confusion_matrix_tool, pr_curves, write_plots)
from .testdev import (CocoTestDevSubmission, submission_name,
                      submission_name_problem, validate_submission)

__all__ = [
    'CocoTestDevSubmission', 'EvaluationRecord', 'ZeroIfEmptyCocoMetric',
    'confusion_matrix', 'mmdet_confusion_matrix_tool', 'pr_curves',
    'submission_name', 'submission_name_problem', 'validate_submission',
    'write_plots'
]
