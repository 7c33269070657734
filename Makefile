# nbops — the front door. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PARAMS ?= params/default.yaml
PORT ?= 8866
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NBOPS := $(VENV)/bin/nbops
UV_VERSION := 0.13.9
# uv from PATH when present, else bootstrapped once into .tools/ (PyPI only, no other download).
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export PYTHONDONTWRITEBYTECODE := 1
# MLflow 3's usage telemetry (internet calls from every process that imports mlflow): off
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: help setup init pipeline eda train evaluate report test lint format lab mlflow-ui rollback champion clean distclean lock

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml | $(UV)
	@test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(PY) --compile-bytecode -r requirements.txt -r requirements-dev.txt
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@# PYTHONDONTWRITEBYTECODE (below) keeps runs from writing .pyc; compile the package once here so
	@# each `nbops` run does not recompile it from source (~40 ms of a 0.5 s no-op rerun)
	$(PY) -m compileall -q src
	@if [ -d .git ]; then $(VENV)/bin/nbstripout --install --attributes .gitattributes; fi
	@touch $@

setup: $(VENV)/.installed ## create .venv with uv from the exact pins (idempotent)

# One lock for Linux, macOS and Windows (--universal), every file hashed; one version of each
# package across the Pythons it allows (--fork-strategy fewest), so a pin names one version.
LOCK_FLAGS := --universal --generate-hashes --fork-strategy fewest --python-version 3.11

lock: | $(UV) ## recompile requirements*.txt from requirements*.in (exact pins, hashes, every OS)
	$(UV) pip compile --quiet requirements.in -o requirements.txt $(LOCK_FLAGS)
	$(UV) pip compile --quiet requirements-dev.in -o requirements-dev.txt $(LOCK_FLAGS)

pipeline: setup ## run the notebooks headless: validate, EDA, train, evaluate, gate -> reports/<PARAMS stem>/ (PARAMS=...)
	$(NBOPS) run --params $(PARAMS) $(ARGS)

eda: setup ## run only the EDA notebook
	$(NBOPS) run --params $(PARAMS) --only 01_eda $(ARGS)

train: setup ## run only the train notebook
	$(NBOPS) run --params $(PARAMS) --only 02_train $(ARGS)

evaluate: setup ## run the evaluate notebook (and train, if it is not current)
	$(NBOPS) run --params $(PARAMS) --only 03_evaluate $(ARGS)

report: setup ## re-render reports/<PARAMS stem>/ from the last executed notebooks
	$(NBOPS) report --params $(PARAMS)

# pytest-xdist workers for `make test` (TEST_WORKERS=0: one process, in file order)
TEST_WORKERS ?= 2

test: setup ## all tests: unit, data, model, notebooks (nbval), end to end (TEST_WORKERS=2); prints the 25 slowest
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) --durations=25 $(PYTEST_ARGS)

lint: setup ## ruff on code and notebooks, mypy on src/ ([tool.mypy]); no notebook outputs committed
	$(VENV)/bin/ruff check src tests notebooks
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy
	@# what git would commit (the staged blob, after the nbstripout filter), not the working file Lab saved
	@git ls-files -z '*.ipynb' | while IFS= read -r -d '' nb; do \
	  git show ":$$nb" | $(VENV)/bin/nbstripout --verify >/dev/null \
	    || { echo "$$nb: the staged notebook has outputs or execution counts" >&2; exit 1; }; done

format: setup ## ruff format and autofix
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests notebooks

# JupyterLab's port: PORT when given on the command line (`make lab PORT=8888`), else 8888
LAB_PORT ?= $(if $(filter command line,$(origin PORT)),$(PORT),8888)

init: setup ## a commented params file for your CSV: make init CSV=data/raw/x.csv TARGET=column [OUT=params/x.yaml]
	@test -n "$(CSV)" -a -n "$(TARGET)" || { echo "make init CSV=data/raw/your.csv TARGET=column" >&2; exit 2; }
	$(NBOPS) init $(CSV) --target $(TARGET) $(if $(OUT),--out $(OUT)) $(ARGS)

lab: setup ## JupyterLab on 127.0.0.1:LAB_PORT, PARAMS' values injected into each notebook; hand runs write build/lab/<PARAMS stem>/
	$(NBOPS) lab --params $(PARAMS) --port $(LAB_PORT)

mlflow-ui: setup ## MLflow UI on 127.0.0.1:5000 for the local store
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

rollback: setup ## move `champion` back to the previous champion version
	$(NBOPS) rollback --params $(PARAMS)

champion: setup ## print the champion version
	$(NBOPS) champion --params $(PARAMS)

clean: ## remove build products, reports (every params file's) and caches (keeps the MLflow store and .venv)
	rm -rf build .pytest_cache .ruff_cache
	find reports -mindepth 1 ! -name README.md -exec rm -rf {} +

distclean: clean ## also remove the MLflow store, generated synthetic data and .venv
	rm -rf mlflow $(VENV) .tools
	find data/raw -mindepth 1 ! -name README.md -delete

# ---------------------------------------------------------------- dashboard and Space
HOST ?= 127.0.0.1
SPACE_DIR ?= space
SPACE_PORT ?= 7860
VOILA_CONFIG := deploy/voila

.PHONY: dashboard space space-serve space-base space-image space-run space-stop

dashboard: setup ## the Voila dashboard of the champion on 127.0.0.1:PORT (default 8866; PARAMS names the model)
	NBOPS_PARAMS=$(abspath $(PARAMS)) NBOPS_ROOT=$(CURDIR) $(VENV)/bin/voila notebooks/dashboard.ipynb \
	  --Voila.config_file_paths=$(VOILA_CONFIG) --Voila.ip=127.0.0.1 --port=$(PORT) --no-browser

space: setup ## assemble the Hugging Face Space folder space/ with the exported champion
	$(NBOPS) space build --params $(PARAMS) --out $(SPACE_DIR)

# The Space's own environment, as its Dockerfile builds it: only the folder's requirements.txt,
# installed without dependencies, so a package missing from the slim pins fails here, not on the Space.
SPACE_VENV ?= build/space-venv

space-serve: | $(UV) ## serve space/ as its Dockerfile does: its slim pins alone (in build/space-venv), then its CMD on HOST:7860
	@test -f $(SPACE_DIR)/requirements.txt || { echo "error: $(SPACE_DIR)/requirements.txt is missing: build the folder with \`make space\`" >&2; exit 2; }
	@test -x $(SPACE_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(SPACE_VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(SPACE_VENV)/bin/python $(SPACE_DIR)/requirements.txt
	cd $(SPACE_DIR) && PYTHONPATH=src $(abspath $(SPACE_VENV))/bin/python -m nbops.serve.space serve . --host $(HOST) --port $(SPACE_PORT)

# The Space image (nbops.serve.container): docker when its daemon answers, else podman (runc, no default
# ulimits; CONTAINER_ENGINE=docker|podman forces one); the base is the registry's python:3.11-slim,
# or a Debian stand-in built once in .cache/containers/.
CONTAINER = $(NBOPS) container $(if $(CONTAINER_ENGINE),--engine $(CONTAINER_ENGINE))

space-base: setup ## the image's base: the registry's python:3.11-slim, else a Debian stand-in (built once, .cache/containers/)
	$(CONTAINER) base

space-image: setup ## build space/'s Dockerfile with docker or podman, tagged <model>:v<version>
	$(CONTAINER) build $(SPACE_DIR)

space-run: setup ## run the space image detached on HOST:SPACE_PORT (127.0.0.1:7860); `make space-stop` stops it
	$(CONTAINER) run $(SPACE_DIR) --host $(HOST) --port $(SPACE_PORT)

space-stop: setup ## stop and remove the container `make space-run` started (by its recorded id)
	$(CONTAINER) stop

# ---------------------------------------------------------------- CI/CD (.github/workflows/)
# `make ci` runs the targets ci.yml runs, in the same order, so a CI failure reproduces here.
CI_PARAMS ?= params/default.yaml
PROMOTE ?= true
# CI_PARAMS with `promote:` set, named <stem>-ci: its folders are build/<stem>-ci/ and
# reports/<stem>-ci/ (the workflows' CI_REPORTS), apart from CI_PARAMS' own
CI_NAME := $(basename $(notdir $(CI_PARAMS)))-ci
CI_PARAMS_OUT := build/.ci/$(CI_NAME).yaml

.PHONY: ci ci-pipeline drift deploy

ci: ## what CI runs, in its order: setup, lint, test, ci-pipeline (PROMOTE=false: as on a pull request)
	$(MAKE) setup
	$(MAKE) lint
	$(MAKE) test
	$(MAKE) ci-pipeline

ci-pipeline: setup ## the pipeline on CI_PARAMS (default params/default.yaml) with promote: PROMOTE (false on pull requests) -> reports/<stem>-ci/
	@case "$(PROMOTE)" in true|false) ;; *) echo "error: PROMOTE must be true or false, got '$(PROMOTE)'" >&2; exit 2;; esac
	@mkdir -p $(dir $(CI_PARAMS_OUT))
	@{ grep -v '^promote:' $(CI_PARAMS); echo "promote: $(PROMOTE)"; } > $(CI_PARAMS_OUT)
	$(NBOPS) run --params $(CI_PARAMS_OUT) $(ARGS)

drift: setup ## drift check of the data vs the champion's training data -> reports/<PARAMS stem>/drift.html (ARGS=--retrain|--force)
	$(NBOPS) drift --params $(PARAMS) $(ARGS)

# `make deploy --dry-run` (make's own -n, so the `+` line still runs) or DRY_RUN=1: the files it would
# upload and the commit message, with no token and no request to the Hub
DEPLOY_DRY := $(or $(DRY_RUN),$(findstring n,$(firstword $(filter-out -% %=%,$(MAKEFLAGS)))))

deploy: setup ## upload space/ to the Hugging Face Space HF_SPACE_ID, wait until it serves the champion (HF_TOKEN); --dry-run lists the files
	+$(NBOPS) deploy --params $(PARAMS) --space-dir $(SPACE_DIR) --space-id "$(HF_SPACE_ID)" $(if $(DEPLOY_DRY),--dry-run)

# ---------------------------------------------------------------- benchmarks (docs/benchmarks.md)
# BENCH_ROUNDS=N rounds (default 5), BENCH_QUICK=1 for 3 rounds and scale up to 1e5 rows,
# BENCH_ONLY="pipeline scale dashboard setup sweep bounds image bootstrap" to measure some parts (others kept in results.json).
.PHONY: bench bench-profile

bench: setup ## measure speed (medians of interleaved rounds) -> benchmarks/results.json + the tables in docs/benchmarks.md
	@# runs write no .pyc (PYTHONDONTWRITEBYTECODE): bytecode for the package as it is now, or every
	@# measured process compiles what was edited since setup (about 0.2 s on a no-op rerun)
	$(PY) -m compileall -q src
	$(PY) -m benchmarks.run $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

bench-profile: setup ## pyinstrument of the runner (cold, noop) and kernel import times -> benchmarks/profiles/
	$(PY) -m benchmarks.profile

# ---------------------------------------------------------------- sweeps and the team server
SWEEP ?= params/sweeps/trees.yaml

.PHONY: sweep team-server-test

sweep: setup ## parameter sweep SWEEP=params/sweeps/<name>.yaml (SCHEDULER=tcp://host:8786 for Dask, WORKERS=N local)
	$(NBOPS) sweep --sweep $(SWEEP) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS)

team-server-test: setup ## the pipeline and sweeps against a PostgreSQL-backed mlflow server on 127.0.0.1
	$(PY) -m pytest tests/team $(PYTEST_ARGS)

# ---------------------------------------------------------------- docs (mkdocs.yml, docs/)
.PHONY: docs params-schema

docs: setup ## the docs site into site/ (params reference and make targets rendered from the code)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	@echo "docs: $(CURDIR)/site/index.html"

params-schema: setup ## write params/params.schema.json, the JSON schema editors check params files with
	$(NBOPS) params-schema --out params/params.schema.json
