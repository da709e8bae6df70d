"""mxnet_bnq.load(): idempotent, thread-safe, and clear about what is wrong.

Each failure case runs in a fresh interpreter, because loading is once per process."""
import ctypes
import json
import os
import subprocess
import sys
import textwrap

import mxnet as mx

import mxnet_bnq
from mxnet_bnq import names


def run_python(code):
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, cwd=os.path.dirname(__file__))
    return proc.returncode, proc.stdout, proc.stderr


def expect_load_error(setup, message):
    rc, out, err = run_python('''
        import mxnet_bnq
        from mxnet_bnq import library
        %s
        try:
            mxnet_bnq.load()
        except mxnet_bnq.PluginLoadError as e:
            print('PluginLoadError:', e)
        ''' % textwrap.indent(textwrap.dedent(setup), ' ' * 8).strip())
    assert rc == 0, err
    assert 'PluginLoadError:' in out and message in out, out + err


def test_load_is_idempotent_and_returns_the_library_path():
    first = mxnet_bnq.load()
    assert first == mxnet_bnq.load() == mxnet_bnq.library_path()
    assert os.path.isfile(first) and mxnet_bnq.is_loaded()
    assert hasattr(mx.nd.contrib, 'quantized_batch_norm_relu')


def test_concurrent_loads_from_threads():
    rc, out, err = run_python('''
        import threading, mxnet_bnq
        results, errors = [], []
        def worker():
            try:
                results.append(mxnet_bnq.load())
            except Exception as e:  # noqa
                errors.append(repr(e))
        threads = [threading.Thread(target=worker) for _ in range(8)]
        [t.start() for t in threads]; [t.join() for t in threads]
        print(len(set(results)), len(results), errors)
        ''')
    assert rc == 0, err
    assert out.split()[:2] == ['1', '8'] and '[]' in out, out


def test_load_after_a_direct_mx_library_load():
    rc, out, err = run_python('''
        import mxnet as mx, mxnet_bnq
        mx.library.load(mxnet_bnq.library_path(), verbose=False)
        print('OK', mxnet_bnq.load() == mxnet_bnq.library_path())
        ''')
    assert rc == 0 and 'OK True' in out, out + err


def test_missing_library_says_how_to_build_it():
    expect_load_error("library.library_path = lambda: '/nonexistent/libmxnet_bnq.so'",
                      'make install')


def test_wrong_mxnet_version():
    expect_load_error("import mxnet; mxnet.__version__ = '1.8.0'", 'found 1.8.0')


def test_mxnet_without_mkldnn():
    expect_load_error('''
        import mxnet
        class NoMKLDNN:
            def is_enabled(self, name):
                return name != 'MKLDNN'
        mxnet.runtime.Features = NoMKLDNN''', 'no MKLDNN')


def test_mxnet_without_library_api():
    expect_load_error("import mxnet; del mxnet.library.load", 'no library API')


def test_missing_onednn():
    expect_load_error('''
        library._onednn_candidates = lambda: []
        library.ONEDNN_SONAME = 'libdnnl_not_installed.so.3' ''', 'oneDNN 3.x')


def test_missing_mxnet():
    expect_load_error("import sys; sys.modules['mxnet'] = None", 'MXNet is not installed')


def test_library_refuses_another_mxnet_version():
    lib = ctypes.CDLL(mxnet_bnq.library_path())
    assert lib.initialize(10901) == 1
    assert lib.initialize(10800) == 0
    assert lib.initialize(20000) == 0


def test_library_path_with_spaces_and_unicode(tmp_path):
    odd = tmp_path / 'dir with spaces' / 'ünïcödé 库'
    odd.mkdir(parents=True)
    target = odd / 'libmxnet_bnq.so'
    target.write_bytes(open(mxnet_bnq.library_path(), 'rb').read())
    rc, out, err = run_python('''
        import os, mxnet_bnq
        os.environ['MXNET_BNQ_LIBRARY'] = %r
        print('OK', mxnet_bnq.load() == %r, mxnet_bnq.is_loaded())
        ''' % (str(target), str(target)))
    assert rc == 0 and 'OK True True' in out, out + err


def test_python_names_agree_with_the_library():
    """mxnet_bnq.names spells what the library registers and writes: op,
    pass, partitioner and attribute names, and the quantization levels."""
    mxnet_bnq.load()
    shared = ctypes.CDLL(mxnet_bnq.library_path()).bnq_shared_names
    shared.restype = ctypes.c_char_p
    assert json.loads(shared().decode()) == names.shared_with_library()
    registered = set(mx.operator.get_all_registered_operators())
    assert set(names.BATCH_NORM_OPS) | {names.REGION_OP} <= registered
