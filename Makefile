# The two commands a newcomer runs: `make demo` (the whole pipeline on embedded defaults) and
# `make test` (the test suite). Both create the virtual environment when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
CONFIG ?= configs/adult_tvae_ar.yaml
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@echo "[make] creating $(VENV) with $(PYTHON) and installing the pinned stack (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -U pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gen-pipeline run --config $(CONFIG)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf work .pytest_cache
