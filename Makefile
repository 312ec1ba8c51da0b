# The two commands of the README's quick start. Both set up what they need (idempotently) and then run.
PY ?= python3
VENV ?= .venv

.PHONY: demo test setup setup-dev clean-venv

setup:
	PYTHON=$(PY) VENV=$(VENV) bash scripts/setup.sh

setup-dev:
	PYTHON=$(PY) VENV=$(VENV) bash scripts/setup.sh dev

## main job
demo: setup
	$(VENV)/bin/esn-video doctor

## whole test suite
test: setup-dev
	$(VENV)/bin/python scripts/run_tests.py

clean-venv:
	rm -rf $(VENV)
