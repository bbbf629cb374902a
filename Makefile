# Two commands do all set-up on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up down test check lint format proto bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)  ## start a local six-node cluster in ./.sixfold (Ctrl-C stops it)
	$(BIN)/sixfold up

down: $(STAMP)
	$(BIN)/sixfold down

test: $(STAMP)  ## lint, then every test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

check: $(STAMP)  ## the fast lane (under 90 s): lint, then every test that starts no process
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -m 'not processes and not slow'

proto: $(STAMP)  ## regenerate sixfold/rpc from proto/
	$(BIN)/python sixfold/rpc/generate.py

bench: $(STAMP)
	$(BIN)/sixfold bench

chaos: $(STAMP)  ## the AZ+1 story on the running process cluster (`make up` first)
	$(BIN)/sixfold chaos

clean:
	rm -rf $(VENV) .sixfold .pytest_cache .ruff_cache .hypothesis

IMAGES_SCRIPT := docker/build-images.sh

.PHONY: images
images:  ## build sixfold:latest; with no registry, also its base image (and a wheelhouse if builds are offline)
	bash $(IMAGES_SCRIPT)
