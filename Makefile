# The README's two commands. Both set up everything on a fresh machine
# (a virtualenv in .venv with the project and its test tools) and are safe
# to run again.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast realstack lint bench bench-scale clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## demo: replay the bundled alerts against the bundled GPU fleet snapshot (no cluster needed)
demo: $(STAMP)
	$(BIN)/remediate demo

## lint: ruff, mypy (strict on functions/), layer contracts
lint: $(STAMP)
	$(BIN)/ruff check functions tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --config .importlinter

## test: lint, Rego unit tests, the whole pytest suite: the fast tier
## (doubles) and the realstack tier (real components, built when missing)
test: lint realstack
	$(BIN)/remediate policy test
	$(BIN)/python -m pytest; code=$$?; \
	  if [ $$code -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$code

## test-fast: lint and the fast tier alone (no real components), for quick local loops
test-fast: lint
	$(BIN)/remediate policy test
	$(BIN)/python -m pytest -m "not realstack"; code=$$?; \
	  if [ $$code -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$code

## realstack: build the real components (Go modules in tests/realstack) into a
## cache outside the checkout, and install Prometheus/Alertmanager, when missing
realstack:
	bash tests/realstack/build.sh

bench: $(STAMP)
	$(BIN)/python -m bench

## bench-scale: a 10- and a 1,000-GPU-node fleet on the real control plane
## (kwok), API requests and latency per remediation, the emulator beside it
bench-scale: $(STAMP) realstack
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
