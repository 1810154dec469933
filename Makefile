# `make demo` and `make test` are all a new user types: each builds .venv when needed.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_STATE ?= demo-state

.PHONY: demo test test-fast system-deps bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

# The cacert pipeline on the built-in CA and mail server (loopback), then the check it prints.
demo: $(STAMP)
	rm -rf $(DEMO_STATE) && mkdir -p $(DEMO_STATE)
	$(VENV)/bin/certwright --state-dir $(DEMO_STATE) run cacert \
	    --set domain=example.test --set cert_dir=$(DEMO_STATE)/certs | tee $(DEMO_STATE)/report.txt
	@echo "+ $$(grep -m1 'openssl verify' $(DEMO_STATE)/report.txt)"
	@sh -c "$$(grep -m1 'openssl verify' $(DEMO_STATE)/report.txt)"

test: $(STAMP) system-deps
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -x -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(PY) bench/engine.py
	$(PY) bench/cacert.py

clean:
	rm -rf $(VENV) $(DEMO_STATE) build *.egg-info
