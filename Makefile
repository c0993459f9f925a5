# One command to set up and run the main job, one to run the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint docs wheel-check clean explorer-js explorer-js-check

$(BIN)/astropt: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/astropt

demo: setup
	$(BIN)/astropt demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The docs site (docs/_build/html): warnings are errors, every tutorial is executed.
$(VENV)/.docs-installed: $(BIN)/astropt pyproject.toml
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html

wheel-check:
	PY=$(PY) bash .ci/wheel_check.sh

# The explorer's page (js/explorer) bundled into the package; needs node + npm.
explorer-js:
	cd js/explorer && npm ci --no-audit --no-fund && node build.mjs

# Rebuild and fail if the committed bundle differs (esbuild's output is deterministic).
explorer-js-check: explorer-js
	git diff --exit-code -- src/astropt/tasks/explore/static/explorer.js

clean:
	rm -rf $(VENV) demo runs docs/_build
