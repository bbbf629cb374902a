# Two commands do all set-up on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up down test check lint format proto bench chaos clean system-tools

# PYTHONWARNINGS: setuptools' boxed note on editable installs says nothing a user can act on.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (once, ~15 s): a virtual environment, then from PyPI"
	@$(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print("  " + ", ".join(d.split(">")[0].split("=")[0].split("[")[0] for d in p["dependencies"] + p["optional-dependencies"]["dev"]))'
	@echo "  and sixfold itself (editable: your changes apply without reinstalling)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)  ## start a local six-node cluster in ./.sixfold (Ctrl-C stops it)
	$(BIN)/sixfold up

down: $(STAMP)
	$(BIN)/sixfold down

# Debian packages some tests drive: tmux (sixfold watch) and chromium (sixfold dashboard).
SYSTEM_TOOLS := tmux chromium
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing from Debian (the watch and dashboard tests use them)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null; }; \
	else echo "note:$$missing missing: the tests that need them are skipped (install them as root)"; fi

test: $(STAMP) system-tools  ## lint, then every test (two workers; the slowest tests listed at the end)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest --durations=20

check: $(STAMP)  ## the fast lane (under 90 s): lint, then every test that starts no process
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -m 'not processes and not slow'

proto: $(STAMP)  ## regenerate sixfold/rpc from proto/
	$(BIN)/python sixfold/rpc/generate.py

bench: $(STAMP)
	$(BIN)/sixfold bench

chaos: $(STAMP)  ## the AZ+1 story on the running process cluster (`make up` first)
	$(BIN)/sixfold chaos

clean:
	rm -rf $(VENV) .sixfold .pytest_cache .ruff_cache .mypy_cache .hypothesis

IMAGES_SCRIPT := docker/build-images.sh

.PHONY: images
images:  ## build sixfold:latest; with no registry, also its base image (and a wheelhouse if builds are offline)
	bash $(IMAGES_SCRIPT)
