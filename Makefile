# Set-up and everyday commands.  Everything runs in a local virtualenv (.venv).
#   make demo   create .venv, install, build, run the main job
#   make test   create .venv, install, build, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: venv install test demo bench asan clean

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

test: install
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

demo: install
	$(PY) python/bench_op.py --quick

bench: install
	$(PY) python/bench_op.py

clean:
	rm -rf build *.egg-info results
