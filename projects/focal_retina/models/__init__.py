from .retina_head import FocalRetinaHead, global_num_pos, prior_bias

__all__ = ['FocalRetinaHead', 'global_num_pos', 'prior_bias']
