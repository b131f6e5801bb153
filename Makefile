# The README's two commands. Both set up everything on a fresh machine
# (a virtualenv in .venv with the project and its test tools) and are safe
# to run again.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## demo: replay the bundled alerts against the bundled GPU fleet snapshot (no cluster needed)
demo: $(STAMP)
	$(BIN)/remediate demo

## test: layer contracts, Rego unit tests, the whole pytest suite
test: $(STAMP)
	$(BIN)/lint-imports --config .importlinter
	$(BIN)/remediate policy test
	$(BIN)/python -m pytest; code=$$?; \
	  if [ $$code -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$code

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
