# The two quick-start commands:  `make demo`  and  `make test`.
# Each sets everything up on a fresh machine first (a virtual environment in .venv), so nothing
# needs to be installed by hand. torch is installed first and pinned to the CPU wheel, so no
# CUDA packages are pulled in; requirements/constraints.txt pins every other package.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
TORCH  ?= torch==2.13.0
# Where pip would take torch from PyPI (its CUDA build), pass the CPU wheels' index:
#   make TORCH_INDEX=https://download.pytorch.org/whl/cpu test
TORCH_INDEX ?=
STAMP  := $(VENV)/.multiloss-installed

.PHONY: setup demo test lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PIP) -c requirements/constraints.txt -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/multiloss demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(PY) -m mypy

test: lint typecheck
	sh scripts/ensure-chromium.sh
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PIP) -c requirements/constraints.txt -e ".[bench]"
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs bench-results
