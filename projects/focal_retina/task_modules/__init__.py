from .ohem import OneStageOHEMSampler, example_losses, select_image

__all__ = ['OneStageOHEMSampler', 'example_losses', 'select_image']
