from .focal_loss import FocalFamilyLoss, focal_family_loss

__all__ = ['FocalFamilyLoss', 'focal_family_loss']
