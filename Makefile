# Two entry points for a fresh Debian machine (alternatives: `make run` keeps running):
#   make run    create .venv, install tether, run the hub on embedded defaults
#   make test   install what the tests need (Debian packages included; README.md lists them,
#               scripts/install-system-deps says why) and run the suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The hub's own env vars count when the make variable is not given: LISTEN=... (on the
# command line or in the environment) first, then TETHER_LISTEN, then the default.
DATA   ?= $(or $(TETHER_DATA_DIR),./data)
LISTEN ?= $(or $(TETHER_LISTEN),127.0.0.1:8580)
HUB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test install install-test venv bench clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: installing python3-venv"; \
	  rm -rf $(VENV); apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python

# An editable install leaves src/ to be compiled on every run where PYTHONDONTWRITEBYTECODE
# is set (a third of a quick command's start-up): byte-compile it here (docs/benchmarks.md).
install: venv
	@$(BIN)/pip install -q -e .
	@$(BIN)/python -m compileall -q src/tether

install-test: venv
	@scripts/install-system-deps
	@$(BIN)/pip install -q -e '.[test]'
	@$(BIN)/python -m compileall -q src/tether

run: install
	@$(BIN)/tether hub --data $(DATA) --listen $(LISTEN) $(HUB_ARGS)

# pytest exits 5 when it collects no tests; scripts/run-tests turns that into a failure
# and also refuses a run that executed fewer tests than it collected.
test: install-test
	@scripts/run-tests $(PYTEST_ARGS)

bench: install-test
	@scripts/install-system-deps --bench
	@$(BIN)/python benchmarks/auth_rps.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
