# `make demo` and `make test` are all a new user types: each builds .venv when needed.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_STATE ?= demo-state
# The package is installed editable in setuptools' strict mode: a tree of links under
# build/ that mypy and every other tool can follow (the default mode is an import hook).
# A link tree does not see new files, so the install is redone when the set of files changes.
SOURCE_DIRS := core mail state engine steps ca pipelines
FILES  := $(VENV)/.files
LINKED := $(VENV)/.linked-stamp

RUNTIME := $(VENV)/.runtime-stamp
TESTDEPS := $(VENV)/.test-stamp

.PHONY: demo test test-fast system-deps bench lint man clean FORCE

# Two stamps: the runtime dependencies (all `make demo` needs), and the test extras on top
# (`make test`, `lint`, `bench`). A demo venv gains the extras when a test target runs; a
# test venv already has all the demo needs, so `make demo` installs nothing more.
$(RUNTIME): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77' wheel
	$(PY) -m pip install --quiet -e . --config-settings editable_mode=strict
	touch $@

$(TESTDEPS): $(RUNTIME)
	$(PY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	touch $@

# the list of package files, rewritten only when it changes (so its mtime says when)
$(FILES): FORCE
	@mkdir -p $(VENV)
	@find $(SOURCE_DIRS) -type f \( -name '*.py' -o -name '*.yaml' -o -name '*.json' \) \
	    -not -path '*/__pycache__/*' | LC_ALL=C sort > $@.new
	@cmp -s $@.new $@ && rm -f $@.new || mv $@.new $@

$(LINKED): $(RUNTIME) $(FILES)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . \
	    --config-settings editable_mode=strict
	touch $@

system-deps:
	bash scripts/system-deps.sh

# The cacert pipeline on the built-in CA and mail server (loopback), then the check it
# prints and the inventory. The certificate goes into its own folder under
# $(DEMO_STATE)/live (as root the default root would be /etc/certwright/live).
demo: $(LINKED)
	rm -rf $(DEMO_STATE) && mkdir -p $(DEMO_STATE)
	CERTWRIGHT_LIVE_DIR=$(abspath $(DEMO_STATE))/live \
	    CERTWRIGHT_CACHE_DIR=$(abspath $(DEMO_STATE))/cache $(VENV)/bin/certwright \
	    --state-dir $(DEMO_STATE) run cacert --set domain=example.test \
	    | tee $(DEMO_STATE)/report.txt
	@echo "+ $$(grep -m1 'openssl verify' $(DEMO_STATE)/report.txt)"
	@sh -c "$$(grep -m1 'openssl verify' $(DEMO_STATE)/report.txt)"
	$(VENV)/bin/certwright --state-dir $(DEMO_STATE) certificates

# lint first: a finding stops the run before the five minutes of tests
test: lint system-deps
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: $(TESTDEPS) $(LINKED)
	$(PY) -m pytest -q -x -p no:cacheprovider tests/unit

# ruff with the rule set in pyproject.toml, then mypy strict on the whole package
lint: $(TESTDEPS) $(LINKED)
	$(VENV)/bin/ruff check
	PYTHON=$(PY) bash scripts/typecheck.sh

bench: $(TESTDEPS) $(LINKED)
	$(PY) bench/engine.py
	$(PY) bench/cacert.py

# the manual page, generated from the CLI's parser (`man -l build/man/certwright.1`)
man: $(LINKED)
	mkdir -p build/man
	$(VENV)/bin/certwright manpage > build/man/certwright.1

clean:
	rm -rf $(VENV) $(DEMO_STATE) build *.egg-info
