# Everything a fresh machine of this kind needs, idempotently: `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system venv test lint typecheck pytest demo bench concourse-images clean

setup: system venv

# System packages (one apt-get install of what is missing) and QEMU binfmt handlers.
system:
	bash scripts/install-system.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check src tests testbed bench
	$(VENV)/bin/ruff format --check src tests testbed bench

typecheck: venv
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: setup lint typecheck pytest

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) bench/run_all.py

concourse-images: setup
	$(PY) scripts/concourse_images.py $(REGISTRY)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
