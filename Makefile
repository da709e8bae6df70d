# Set-up and everyday commands.  Everything runs in a local virtualenv (.venv).
#   make demo   create .venv, install, build, run the main job
#   make test   create .venv, install, build, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=

FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

ASAN_LIB := $(CURDIR)/build/asan/libmxnet_bnq.so
SANITIZER_RUNTIME = $$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libubsan.so)

FUZZ_SECONDS ?= 60
CLANGXX ?= clang++-14

.PHONY: venv install test lint format demo bench bench-e2e asan fuzz clean

# Real labelled images (Debian's dataset-fashion-mnist) for the demo and tests.
$(FASHION_MNIST):
	@echo "installing Debian's dataset-fashion-mnist"
	$(SUDO) apt-get install -y -q dataset-fashion-mnist || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist)

$(VENV)/.installed-deps: requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed-deps

# Build against the MXNet and oneDNN of .venv, so no build isolation.  Only
# when a source changed since the last install (the stamp file).
PACKAGE_SOURCES := $(wildcard src_cpp/*.cc src_cpp/*.h src_cpp/region/*.cc src_cpp/region/*.h \
                              src_cpp/pass/*.cc src_cpp/pass/*.h \
                              mxnet_bnq/*.py) setup.py pyproject.toml MANIFEST.in README.md
$(VENV)/.installed-package: $(VENV)/.installed-deps $(PACKAGE_SOURCES)
	$(PIP) install --no-build-isolation --no-deps --force-reinstall .
	$(PY) setup.py -q build_library   # the same library in the checkout, for scripts run from here
	touch $@

install: $(VENV)/.installed-package

test: install $(FASHION_MNIST)
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

demo: install $(FASHION_MNIST)
	$(PY) python/demo.py

bench: install
	$(PY) python/bench_op.py

bench-e2e: install
	$(PY) python/bench_e2e.py

# The library with AddressSanitizer + UBSan, and the op, graph and flow tests on it.
# (detect_leaks=0: the Python interpreter and MXNet themselves leak at exit.)
# ruff (ruff.toml) for Python, clang-format (.clang-format) for C++; both pinned
# in requirements-dev.txt.  `make format` applies clang-format's changes.
CXX_SOURCES := $(wildcard src_cpp/*.cc src_cpp/*.h src_cpp/region/*.cc src_cpp/region/*.h \
                          src_cpp/pass/*.cc src_cpp/pass/*.h \
                          src_cpp/fuzz/*.cc)
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/clang-format --dry-run -Werror --style=file $(CXX_SOURCES)

format: venv
	$(VENV)/bin/clang-format -i --style=file $(CXX_SOURCES)

asan: install $(FASHION_MNIST)
	MXNET_BNQ_SANITIZE=1 $(PY) -c "import setup; setup.compile_library('$(ASAN_LIB)')"
	MXNET_BNQ_LIBRARY=$(ASAN_LIB) LD_PRELOAD="$(SANITIZER_RUNTIME)" \
	  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(VENV)/bin/pytest tests/test_op_reference.py tests/test_bad_input.py tests/test_graph.py \
	  tests/test_quantization_flow.py tests/test_reliability.py tests/test_regions.py \
	  tests/test_regions_models.py tests/test_fused_activations.py $(PYTEST_ARGS)

# Coverage-guided fuzzing (libFuzzer, ASan, UBSan) of attribute parsing, scale/shift
# folding and pass options; needs clang (apt-get install clang-14 libclang-rt-14-dev).
fuzz:
	mkdir -p build/fuzz-corpus
	$(CLANGXX) -g -O1 -std=c++17 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  src_cpp/fuzz/parsing_fuzzer.cc src_cpp/batch_norm_attrs.cc src_cpp/number_parsing.cc src_cpp/pooling_attrs.cc \
	  src_cpp/scale_shift_folding.cc src_cpp/pass_options.cc src_cpp/region/quantized_conv_scales.cc \
	  -o build/parsing_fuzzer
	build/parsing_fuzzer -max_total_time=$(FUZZ_SECONDS) -seed=1 -print_final_stats=1 \
	  build/fuzz-corpus src_cpp/fuzz/corpus

clean:
	rm -rf build *.egg-info results $(VENV)/.installed-package
