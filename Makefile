# Everything a fresh machine of this kind needs, idempotently: `make demo`, `make test`.
# A second run does nothing heavy: system packages are checked with dpkg, and the venv
# is rebuilt only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON_FILES := src tests testbed bench scripts
# Whole-suite bound; pytest-timeout bounds each test (pyproject). SIGTERM at the bound
# still runs fixture teardown, so the test bed's registries stop.
PYTEST_TIMEOUT ?= 1800
PYTEST_ARGS ?=

.PHONY: setup system venv inputs test lint typecheck pytest demo bench \
	concourse-images testbed-start testbed-stop clean

setup: system venv

# System packages (one apt-get install of what is missing) and QEMU binfmt handlers.
system:
	bash scripts/install-system.sh

venv: $(STAMP)

# Order-only on system: a new machine needs python3-venv before the first venv.
$(STAMP): pyproject.toml | system
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "make: $(PYTHON) is older than 3.11; run make PYTHON=python3.11" >&2; \
		  exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' </dev/null
	touch $(STAMP)

# busybox-static per architecture into ~/.cache/platforge-testbed (tests fetch it
# on first use too; this only warms the cache).
inputs: venv
	$(PY) -m testbed inputs

lint: venv
	$(VENV)/bin/ruff check $(PYTHON_FILES)
	$(VENV)/bin/ruff format --check $(PYTHON_FILES)

# Both runs report even when the first fails.
typecheck: venv
	@status=0; \
	$(VENV)/bin/mypy || status=1; \
	$(VENV)/bin/mypy testbed || status=1; \
	exit $$status

# pytest's exit status 5 (no tests collected) is a failure here, never a pass.
pytest: setup
	@status=0; \
	timeout -k 60 $(PYTEST_TIMEOUT) $(VENV)/bin/pytest $(PYTEST_ARGS) </dev/null \
		|| status=$$?; \
	if [[ $$status -eq 5 ]]; then echo "make: pytest collected no tests" >&2; exit 1; fi; \
	if [[ $$status -eq 124 ]]; then \
		echo "make: pytest ran over $(PYTEST_TIMEOUT)s and was stopped" >&2; fi; \
	exit $$status

test: setup lint typecheck pytest

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) bench/run_all.py

concourse-images: setup
	$(PY) scripts/concourse_images.py $(REGISTRY)

# A test bed that outlives one pytest session; sessions attach to it and leave it.
testbed-start: venv
	$(PY) -m testbed start

testbed-stop: venv
	$(PY) -m testbed stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
