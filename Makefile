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

.PHONY: venv install test demo bench asan clean

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

# Build against the MXNet and oneDNN of .venv, so no build isolation.
install: venv
	$(PIP) install --no-build-isolation --no-deps --force-reinstall .
	$(PY) setup.py -q build_library   # the same library in the checkout, for scripts run from here

test: install $(FASHION_MNIST)
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

demo: install $(FASHION_MNIST)
	$(PY) python/demo.py

bench: install
	$(PY) python/bench_op.py

clean:
	rm -rf build *.egg-info results
