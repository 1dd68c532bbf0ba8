# Two commands do all set-up on a fresh machine:
#   make repro   create .venv if needed, then run the DVC pipeline (dvc repro)
#   make test    same environment, then the test suite
# TORCH_SPEC is installed before the project so that pip never pulls a multi-GB CUDA build
# by accident; on a CUDA workstation set it to your build, e.g.
#   make repro TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
# (an already installed torch in .venv is kept: the project's requirement is a range).

VENV       ?= .venv
PYTHON     ?= python3
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.imgae-dx-installed

export PATH := $(abspath $(VENV))/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: repro test lint format env clean-venv

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || { echo ">> installing $(TORCH_SPEC)"; $(PY) -m pip install -q $(TORCH_SPEC); }
	@echo ">> installing imgae-dx with dev extras"
	@$(PY) -m pip install -q -e ".[dev]"
	@$(PY) -c "import imgae_dx, torch, dvc; print('>> environment ready: torch', torch.__version__)"
	@touch $(STAMP)

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check src stages tests benchmarks
	$(VENV)/bin/ruff format --check src stages tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src stages tests benchmarks
	$(VENV)/bin/ruff check --fix src stages tests benchmarks

clean-venv:
	rm -rf $(VENV)
