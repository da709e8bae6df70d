"""Finding and loading the compiled plugin library into MXNet.

``load()`` is the one entry point: it checks that the running MXNet can host
the plugin, makes sure oneDNN can be found, and calls ``mx.library.load``
once per process.  Every failure is a :class:`PluginLoadError` saying what is
wrong and how to fix it.
"""
import ctypes
import glob
import importlib.metadata
import logging
import os
import threading

from . import names

__all__ = ['PluginLoadError', 'load', 'library_path', 'is_loaded', 'needs_plugin',
           'REQUIRED_MXNET_VERSION', 'ONEDNN_PACKAGE']

REQUIRED_MXNET_VERSION = '1.9.1'
ONEDNN_PACKAGE = 'onednn-cpu-gomp'
LIBRARY_NAME = 'libmxnet_bnq.so'
ONEDNN_SONAME = 'libdnnl.so.3'
# An op only this library registers: present means the library is loaded.
MARKER_OP = names.QUANTIZED_BATCH_NORM_RELU

# Ops only the plugin provides (MXNet has its own _contrib_quantized_batch_norm:
# the plugin's marks its nodes with names.PLUGIN_ATTR instead).
PLUGIN_OPS = tuple(op for op in names.BATCH_NORM_OPS if op != names.QUANTIZED_BATCH_NORM) + \
    (names.QUANTIZED_AVG_POOLING, names.REGION_OP)
PLUGIN_ATTR = names.PLUGIN_ATTR

_LOG = logging.getLogger(__name__)
_LOCK = threading.Lock()
_loaded_path = None


class PluginLoadError(RuntimeError):
    """The plugin library cannot be loaded into this MXNet."""


def library_path():
    """Absolute path of the library to load: $MXNET_BNQ_LIBRARY if set (e.g. a
    sanitizer build, see `make asan`), else the one shipped inside the package."""
    override = os.environ.get('MXNET_BNQ_LIBRARY')
    if override:
        return os.path.abspath(override)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib', LIBRARY_NAME)


def _import_mxnet():
    try:
        import mxnet
    except ImportError as err:
        raise PluginLoadError(
            "MXNet is not installed (or fails to import: %s); install it with "
            "pip install mxnet==%s 'numpy<1.24'" % (err, REQUIRED_MXNET_VERSION)) from err
    return mxnet


def _check_mxnet(mx):
    version = getattr(mx, '__version__', 'unknown')
    if version != REQUIRED_MXNET_VERSION:
        raise PluginLoadError(
            'mxnet_bnq needs MXNet %s (its library API and quantization flow), found %s'
            % (REQUIRED_MXNET_VERSION, version))
    if not hasattr(mx, 'library') or not hasattr(mx.library, 'load'):
        raise PluginLoadError('this MXNet build has no library API (mx.library.load)')
    if not mx.runtime.Features().is_enabled('MKLDNN'):
        raise PluginLoadError(
            'this MXNet build has no MKLDNN (oneDNN) support, which its int8 '
            'quantization flow needs; install the stock pip wheel mxnet==%s'
            % REQUIRED_MXNET_VERSION)


def _onednn_candidates():
    """libdnnl locations of the installed oneDNN wheel, best first."""
    paths = []
    try:
        for f in importlib.metadata.files(ONEDNN_PACKAGE) or []:
            if os.path.basename(str(f)) == ONEDNN_SONAME:
                paths.append(str(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    import sys
    paths += glob.glob(os.path.join(sys.prefix, 'lib', ONEDNN_SONAME))
    return paths


def _load_onednn():
    """Loads libdnnl before the plugin so that the plugin's dependency resolves
    even where its rpath does not point at the oneDNN in use."""
    errors = []
    for path in _onednn_candidates() + [ONEDNN_SONAME]:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return path
        except OSError as err:
            errors.append(str(err))
    raise PluginLoadError(
        'oneDNN 3.x (%s) is not found; install it with pip install %s==2023.2.0 (%s)'
        % (ONEDNN_SONAME, ONEDNN_PACKAGE, '; '.join(errors)))


def needs_plugin(sym):
    """True if a symbol needs the plugin: an mx.sym.Symbol, or its JSON text
    (check a saved model before mx.sym.load, which fails on unknown ops)."""
    import json
    text = sym if isinstance(sym, str) else sym.tojson()
    try:
        nodes = json.loads(text)['nodes']
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError('not a symbol JSON: %s' % err) from err
    return any(n['op'] in PLUGIN_OPS or PLUGIN_ATTR in n.get('attrs', {}) for n in nodes)


def is_loaded():
    """True when the plugin's ops are registered in this process."""
    mx = _import_mxnet()
    return MARKER_OP in mx.operator.get_all_registered_operators()


def load(verbose=False):
    """Loads the plugin into MXNet and returns the library's path.

    Idempotent and thread-safe: later calls return at once.  Raises
    :class:`PluginLoadError` when MXNet, oneDNN or the library is unusable.
    """
    global _loaded_path
    with _LOCK:
        if _loaded_path is not None:
            return _loaded_path
        mx = _import_mxnet()
        _check_mxnet(mx)
        path = library_path()
        if MARKER_OP in mx.operator.get_all_registered_operators():
            # Loaded already, e.g. by a direct mx.library.load(); a second load would fail.
            _loaded_path = path
            return path
        if not os.path.isfile(path):
            raise PluginLoadError(
                'the plugin library %s is missing: build and install the package from '
                'its source tree with `make install` (or pip install --no-build-isolation .)'
                % path)
        onednn = _load_onednn()
        try:
            mx.library.load(path, verbose=verbose)
        except mx.MXNetError as err:
            raise PluginLoadError('MXNet could not load %s: %s' % (path, err)) from err
        _LOG.debug('loaded %s (oneDNN from %s)', path, onednn)
        _loaded_path = path
        return path
