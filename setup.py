"""Builds and installs mxnet_bnq.

The C++ library in src_cpp/ is compiled against the headers and lib_api.cc
that the installed MXNet wheel ships and against oneDNN 3.x from PyPI, and is
installed as mxnet_bnq/lib/libmxnet_bnq.so.  Build inside the environment that
will run it (`pip install --no-build-isolation .`, as `make install` does),
or let pip build in isolation (`pip install .`): pyproject.toml pins the same
MXNet and oneDNN for the build, and the library finds the environment's
oneDNN through its $ORIGIN-relative rpath.

Environment:
  MXNET_BNQ_SANITIZE=1   build with AddressSanitizer and UBSan (make asan).
  MXNET_BNQ_DEBUG=1      build with -O0 -g.
"""
import glob
import os
import subprocess
import sys

from setuptools import Command, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = os.path.join('mxnet_bnq', 'lib', 'libmxnet_bnq.so')


def _mxnet_dir():
    try:
        import mxnet
    except ImportError as err:
        sys.exit("mxnet_bnq builds against the installed MXNet; install it first: "
                 "pip install mxnet==1.9.1 'numpy<1.24' (%s)" % err)
    root = os.path.dirname(mxnet.__file__)
    if not os.path.isfile(os.path.join(root, 'include', 'mxnet', 'lib_api.h')):
        sys.exit('%s has no include/mxnet/lib_api.h: mxnet_bnq needs the MXNet 1.9.1 pip wheel'
                 % root)
    return root


def _installed_file(distribution, name):
    """Location of file `name` of an installed distribution (pip installs the
    oneDNN wheels' files under <prefix>/include and <prefix>/lib, and in an
    isolated build that prefix is pip's build environment)."""
    import importlib.metadata
    try:
        for f in importlib.metadata.files(distribution) or []:
            if str(f).endswith(name):
                return str(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    return None


def _onednn_dirs():
    header = _installed_file('onednn-devel-cpu-gomp', os.path.join('oneapi', 'dnnl', 'dnnl.hpp'))
    library = _installed_file('onednn-cpu-gomp', 'libdnnl.so.3')
    if header and library:
        return (os.path.normpath(os.path.join(os.path.dirname(header), '..', '..')),
                os.path.normpath(os.path.dirname(library)))
    include = os.path.join(sys.prefix, 'include')
    lib = os.path.join(sys.prefix, 'lib')
    if not os.path.isfile(os.path.join(include, 'oneapi', 'dnnl', 'dnnl.hpp')) or \
            not glob.glob(os.path.join(lib, 'libdnnl.so*')):
        sys.exit('oneDNN headers/library not found under %s; install them first: '
                 'pip install onednn-devel-cpu-gomp==2023.2.0 onednn-cpu-gomp==2023.2.0'
                 % sys.prefix)
    return include, lib


def compile_library(output):
    """Compiles src_cpp/*.cc with MXNet's lib_api.cc into `output`."""
    mx_root = _mxnet_dir()
    dnnl_include, dnnl_lib = _onednn_dirs()
    flags = ['-O0', '-g'] if os.environ.get('MXNET_BNQ_DEBUG') == '1' else ['-O2']
    if os.environ.get('MXNET_BNQ_SANITIZE') == '1':
        flags = ['-O1', '-g', '-fno-omit-frame-pointer',
                 '-fsanitize=address,undefined', '-fno-sanitize-recover=undefined']
    sources = sorted(glob.glob(os.path.join(HERE, 'src_cpp', '*.cc')) +
                     glob.glob(os.path.join(HERE, 'src_cpp', 'region', '*.cc')) +
                     glob.glob(os.path.join(HERE, 'src_cpp', 'pass', '*.cc')))
    sources.append(os.path.join(mx_root, 'src', 'lib_api.cc'))
    os.makedirs(os.path.dirname(output), exist_ok=True)
    # -ffp-contract=off: no fused multiply-add, so float steps round as MXNet's do.
    # -fno-trapping-math: float selects (the activations in levels) may be
    # computed on both sides, so those loops vectorize; no value changes, and
    # the library never unmasks floating-point exceptions.
    # -fopenmp: hand-written steps split their work over OpenMP threads, as oneDNN (gomp) does.
    command = (['g++', '-shared', '-fPIC', '-std=c++17', '-Wall', '-ffp-contract=off',
                '-fno-trapping-math', '-fopenmp'] + flags +
               # oneDNN 3.x first: the wheel's include/mkldnn holds MXNet's oneDNN 2.4.
               ['-I' + dnnl_include, '-I' + os.path.join(mx_root, 'include')] +
               sources + ['-o', output, '-L' + dnnl_lib, '-ldnnl',
                          # oneDNN of the environment the package is installed in:
                          # <prefix>/lib/python3.X/site-packages/mxnet_bnq/lib -> <prefix>/lib
                          '-Wl,-rpath,$ORIGIN/../../../..', '-Wl,-rpath,' + dnnl_lib,
                          # libmxnet exports weak oneDNN 2.4 symbols; bind ours to ours.
                          '-Wl,-Bsymbolic'])
    if os.environ.get('MXNET_BNQ_SANITIZE') != '1':
        command.append('-Wl,-z,defs')
    print(' '.join(command))
    subprocess.check_call(command)


class BuildLibraryInPlace(Command):
    """`python setup.py build_library`: compiles the library into the source
    tree, so that the package also works when imported from a checkout."""
    description = 'compile the C++ library into mxnet_bnq/lib/'
    user_options = []

    def initialize_options(self):
        pass

    def finalize_options(self):
        pass

    def run(self):
        compile_library(os.path.join(HERE, LIBRARY))


class BuildPyWithLibrary(build_py):
    """build_py that also compiles the C++ library into the package."""

    def run(self):
        super().run()
        compile_library(os.path.join(self.build_lib, LIBRARY))


if __name__ == '__main__':
    setup(
        name='mxnet_bnq',
        version='0.1.0',
        description='Fast, accurate int8/uint8 quantized BatchNorm for MXNet 1.9.1 (CPU, oneDNN)',
        long_description=open(os.path.join(HERE, 'README.md')).read(),
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        license_files=['LICENSE', 'NOTICE'],
        packages=['mxnet_bnq'],
        python_requires='>=3.8',
        install_requires=['mxnet==1.9.1', 'numpy<1.24', 'onednn-cpu-gomp==2023.2.0'],
        cmdclass={'build_py': BuildPyWithLibrary, 'build_library': BuildLibraryInPlace},
        zip_safe=False,
    )
