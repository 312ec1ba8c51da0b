# The two commands of the README's quick start. Both set up what they need (idempotently) and then run.
PY ?= python3
VENV ?= .venv

.PHONY: demo test docs setup setup-dev clean-venv

setup:
	PYTHON=$(PY) VENV=$(VENV) bash scripts/setup.sh

setup-dev:
	PYTHON=$(PY) VENV=$(VENV) bash scripts/setup.sh dev,azure,docs

## main job: the default experiment (generated dataset, frozen features, ESN vs RNN/LSTM/GRU and extra baselines)
## through papermill; keeps the executed notebook in papermill_runs/ and prints the comparison table.
## Runs that already finished are kept, not retrained (add ARGS=--overwrite to redo them).
demo: setup
	$(VENV)/bin/esn-video run configs/default.yaml $(ARGS)

## whole test suite
test: setup-dev
	$(VENV)/bin/python scripts/run_tests.py

## the documentation site from nbs/ (notebooks executed), docs/guides/ and the package's API, into _site/
## (offline; open _site/index.html, or serve it: .venv/bin/python -m http.server -d _site)
docs: setup-dev
	$(VENV)/bin/python scripts/docs.py build $(ARGS)

clean-venv:
	rm -rf $(VENV)
