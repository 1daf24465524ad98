# Two commands on a fresh machine (Python 3.11): `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when a requirements file or setup.py changed.
$(STAMP): $(PY) requirements.txt requirements-nodeps.txt requirements-test.txt setup.py
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -r requirements-test.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The venv's jaxlib is the CPU build; libtpu (installed for `motionaura compile`) must not be probed for a TPU.
demo: install
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(VENV)/bin/motionaura quickstart --workdir=runs/quickstart

# pytest exits 5 when it collects nothing: that is a failure here, said plainly. TEST_WORKERS test processes
# (pytest-xdist), each file on one of them so that module fixtures are built once; TEST_WORKERS=0: in-process.
TEST_WORKERS ?= 2
test: install
	@$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check motionaura_jax tests experiments
	$(VENV)/bin/ruff format --check motionaura_jax tests experiments

clean:
	rm -rf $(VENV) .pytest_cache
