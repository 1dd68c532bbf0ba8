# Two commands do all set-up on a fresh machine:
#   make repro   create .venv if needed, then run the DVC pipeline (dvc repro)
#   make test    same environment, then the test suite
# TORCH_SPEC is installed before the project so that pip never pulls a multi-GB CUDA build
# by accident; on a CUDA workstation set it to your build, e.g.
#   make repro TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
# (an already installed torch in .venv is kept: the project's requirement is a range).
# Everything else comes from requirements.lock, resolved by uv (`make lock` refreshes it), so
# two runs of the same commit get the same packages; uv installs it in seconds, and plain pip
# installs the same file where uv cannot be had.

VENV       ?= .venv
PYTHON     ?= python3
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
PY         := $(VENV)/bin/python
UV         := $(VENV)/bin/uv
LOCK       := requirements.lock
UV_SPEC    ?= uv>=0.5
STAMP      := $(VENV)/.imgae-dx-installed
# pip's find-links (a local wheel folder, as on this project's machines) for uv too.
UV_FIND_LINKS := $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),)
# Python writes bytecode as modules are first imported: uv installs none, and where the
# environment forbids writing it (PYTHONDONTWRITEBYTECODE, set on some CI machines) every stage
# process would compile mlflow, pandas, dvc... from source again, 2-3 s per process and about a
# minute per `make repro` (uv's --compile-bytecode instead costs 14 s compiling all of it).
unexport PYTHONDONTWRITEBYTECODE

export PATH := $(abspath $(VENV))/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: repro test lint format env lock clean-venv bench

env: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q "$(UV_SPEC)" 2>/dev/null || echo ">> uv unavailable: pip installs everything"
	@$(PY) -c "import torch" 2>/dev/null || { echo ">> installing $(TORCH_SPEC)"; \
	  if test -x $(UV); then $(UV) pip install -q --python $(PY) $(UV_FIND_LINKS) $(TORCH_SPEC); \
	  else $(PY) -m pip install -q $(TORCH_SPEC); fi; }
	@echo ">> installing the locked environment ($(LOCK)) and imgae-dx"
	@if test -x $(UV); then \
	  $(UV) pip install -q --python $(PY) -r $(LOCK) && \
	  $(UV) pip install -q --python $(PY) --no-deps -e . ; \
	else \
	  echo ">> uv unavailable: installing with pip"; \
	  $(PY) -m pip install -q -r $(LOCK) && $(PY) -m pip install -q --no-deps -e . ; \
	fi
	@$(PY) -c "import imgae_dx, torch, dvc; print('>> environment ready: torch', torch.__version__)"
	@touch $(STAMP)

# Re-resolve requirements.lock from pyproject.toml (dependencies and the dev extra, torch left
# to TORCH_SPEC), for every platform and Python >= 3.10.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q "$(UV_SPEC)"
	@$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["dev"] \
	  if not d.replace(" ", "").startswith("torch")))' \
	  | $(UV) pip compile - --universal --python-version 3.10 --quiet \
	      --custom-compile-command "make lock" -o $(LOCK)
	@echo ">> $(LOCK) written"

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected"; exit 0; fi; exit $$rc

# Benchmarks -> benchmarks/results/*.json -> BENCHMARKS.md (about 10 min on 2 quiet cores);
# BENCH_QUICK=1 is a smoke run at minimal sizes into .bench-quick/.
BENCH_QUICK ?=
bench: $(STAMP)
	$(PY) benchmarks/run_bench.py $(if $(filter 1 yes true,$(BENCH_QUICK)),--quick,)

lint: $(STAMP)
	$(VENV)/bin/ruff check src stages tests benchmarks
	$(VENV)/bin/ruff format --check src stages tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src stages tests benchmarks
	$(VENV)/bin/ruff check --fix src stages tests benchmarks

clean-venv:
	rm -rf $(VENV)
