from .tiling import detect_tiled, merge_tiles, tile_windows

__all__ = ['detect_tiled', 'merge_tiles', 'tile_windows']
