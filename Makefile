# `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Each installs what it needs into .venv first (torch comes from this machine's wheel store):
# the demo only the runtime dependencies, the tests the dev extras as well.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed
DEV := $(VENV)/.installed-dev
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test lint format clean chromium

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(DEV)

install: $(DEV)

demo: $(RUNTIME)
	$(BIN)/python -m jobs.demo

test: $(DEV) lint chromium
	$(BIN)/python -m pytest -q --durations=20

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The report test renders the HTML report in Debian's headless Chromium.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

format: $(DEV)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache
