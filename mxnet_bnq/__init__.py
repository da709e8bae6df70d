"""mxnet_bnq: a fast, accurate int8/uint8 quantized BatchNorm for MXNet 1.9.1 (CPU).

    import mxnet_bnq
    mxnet_bnq.load()   # registers the ops and the BNQ_QUANTIZE pass in MXNet
    qsym, qargs, qaux = mxnet_bnq.quantize_model_mkldnn(sym, args, aux, ...)

Importing the package does not import MXNet: ``load()`` reports a missing or
unsuitable MXNet with a clear :class:`PluginLoadError`.
"""
import importlib

from .library import PluginLoadError, is_loaded, library_path, load, needs_plugin

__version__ = '0.1.0'

# Attributes that need MXNet, imported on first use (PEP 562).
_LAZY = {
    'quantize_model': 'quantization', 'quantize_model_mkldnn': 'quantization',
    'quantize_net': 'quantization', 'rewrite_quantized_symbol': 'quantization',
    'BN_MODES': 'quantization', 'PASS_NAME': 'quantization',
    'report': 'layer_report', 'format_report': 'layer_report',
    'prepare_fp32': 'fp32_preparation', 'canonical_activations': 'fp32_preparation',
    'guard_shared_convolutions': 'fp32_preparation', 'check_fusion': 'fp32_preparation',
    'partition': 'regions', 'region_report': 'regions', 'format_region_report': 'regions',
    'expand_regions': 'regions',
}

__all__ = ['PluginLoadError', 'is_loaded', 'library_path', 'load', 'needs_plugin',
           '__version__'] + sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module('.' + _LAZY[name], __name__), name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
