# The README's commands. `make test` and `make run` set everything up from zero in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PACKAGE_STAMP := $(VENV)/.package-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.run-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
VARIANT ?= cpu

.PHONY: run demo test bench eval clean package selftest-package

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[app,export,test,cluster,bench]"
	rm -f $(VENV)/.installed-*
	touch $@

# `make run` installs what the app needs (no test tools, no Ray); `make test` adds them.
$(RUN_STAMP): pyproject.toml
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
