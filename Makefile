# The README's commands. `make test` and `make run` set everything up from zero in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run demo test bench eval clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[app,export,test]"
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
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

clean:
	rm -rf $(VENV) out build dist *.egg-info
