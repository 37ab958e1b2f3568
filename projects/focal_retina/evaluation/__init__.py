from .testdev import CocoTestDevSubmission, validate_submission

__all__ = ['CocoTestDevSubmission', 'validate_submission']
