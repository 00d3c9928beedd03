# videogen developer commands. Every target creates .venv and installs into it when needed,
# so a fresh machine needs only Python >= 3.10 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install pins train evaluate test test-slow test-all bench lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  pass Hydra overrides with ARGS, e.g. make train ARGS='model=vit trainer.max_epochs=2'"

# The tested versions: pyproject.toml keeps ranges, constraints.txt pins what the suite ran with.
CONSTRAINTS := constraints.txt
PIP_VERSION := 26.3

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install videogen with its dev tools

pins: ## re-resolve the newest versions the ranges allow into constraints.txt (then run make test)
	rm -rf .pins-venv
	$(PYTHON) -m venv .pins-venv
	.pins-venv/bin/python -m pip install --quiet pip==$(PIP_VERSION)
	.pins-venv/bin/python -m pip install --quiet -e '.[dev,bench,sweeps]'
	grep '^#' $(CONSTRAINTS) > $(CONSTRAINTS).new
	.pins-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' >> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .pins-venv

train: $(STAMP) ## train (python -m videogen $(ARGS)); default: tiny ViViT on synthetic video
	$(BIN)/python -m videogen $(ARGS)

evaluate: $(STAMP) ## test a checkpoint: make evaluate ARGS='ckpt_path=outputs/.../best.ckpt'
	$(BIN)/python -m videogen.evaluate $(ARGS)

# Two pytest workers: most tests wait on a CLI subprocess starting up, so two at a time keep
# both cores busy. Whole files go to one worker, so a file's shared trained run is made once.
PARALLEL := -n 2 --dist loadfile

test: $(STAMP) ## run the test suite without the long learning runs (GPU tests skip without CUDA)
	$(BIN)/python -m pytest $(PARALLEL) -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## run only the long learning runs (marked slow), e.g. the default recipe's accuracy
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP) ## run every test, slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## run every benchmark and write benchmarks/RESULTS.md (ARGS='--quick', '--only training')
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[bench]'
	$(BIN)/python -m benchmarks $(ARGS)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean: ## remove the virtualenv, build artefacts, caches and run outputs
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache outputs multirun wandb lightning_logs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
