# The README's commands. `make test` and `make run` set everything up from zero in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The install is redone when the project's metadata or its one compiled extension changes.
BUILD_INPUTS := pyproject.toml setup.py crfcore/affinity/_window.c
BUILD_SUM := $(shell cat $(BUILD_INPUTS) | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.installed-$(BUILD_SUM)
PACKAGE_STAMP := $(VENV)/.package-$(BUILD_SUM)
RUN_STAMP := $(VENV)/.run-$(BUILD_SUM)
VARIANT ?= cpu

.PHONY: run demo test bench eval clean package selftest-package

$(STAMP): $(BUILD_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[app,export,test,cluster,bench]"
	rm -f $(VENV)/.installed-*
	touch $@

# `make run` installs what the app needs (no test tools, no Ray); `make test` adds them.
$(RUN_STAMP): $(BUILD_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[app,export]"
	rm -f $(VENV)/.run-*
	touch $@

run: $(RUN_STAMP)
	$(PY) -m app.main resources/samples

demo: $(STAMP)
	$(PY) -m crfcore.demo --out out/demo

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet "pydensecrf2==1.1" || echo "pydensecrf2 unavailable: the DenseCRF peer is skipped"
	$(PY) -m crfcore.cli bench convcrf

eval: $(STAMP)
	$(PY) -m crfcore.cli eval --data ../shared/data/voc --method convcrf

# The one-folder app in dist/crf-studio/ (VARIANT=cuda: dist/crf-studio-cuda/, with a CUDA torch in the venv).
$(PACKAGE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[app,export,package]"
	rm -f $(VENV)/.package-*
	touch $@

package: $(PACKAGE_STAMP)
	$(PY) packaging/build.py build --variant $(VARIANT)

selftest-package:
	$(PY) packaging/build.py selftest --variant $(VARIANT)

clean:
	rm -rf $(VENV) out build dist *.egg-info
