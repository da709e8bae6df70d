"""mxnet_bnq: a fast, accurate int8/uint8 quantized BatchNorm for MXNet 1.9.1 (CPU).

    import mxnet_bnq
    mxnet_bnq.load()   # registers _contrib_quantized_batch_norm(_relu) in MXNet
"""
from .library import PluginLoadError, is_loaded, library_path, load

__version__ = '0.1.0'
__all__ = ['PluginLoadError', 'is_loaded', 'library_path', 'load', '__version__']
