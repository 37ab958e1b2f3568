from .dr_loss import DRLoss, dr_loss
from .focal_loss import FocalFamilyLoss, focal_family_loss

__all__ = ['DRLoss', 'FocalFamilyLoss', 'dr_loss', 'focal_family_loss']
