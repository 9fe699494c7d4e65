# The two commands of the README:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
JOBS ?= 2

.PHONY: setup demo smoke test test-all lint docs docs-build clean

setup:
	bash scripts/setup.sh $(VENV)

# Sets everything up and runs the main job: regenerate a small cube-single-play dataset if
# absent, train SORL on CPU, evaluate over (k, N), print the table and write the plot.
demo: setup
	$(PY) -m sorl_torchrl.recipes.train +experiment=demo

# A one-minute smoke run on a synthetic bimodal bandit (no dataset needed).
smoke: setup
	$(PY) -m sorl_torchrl.smoke

# Sets everything up and runs the default test suite (slow tests excluded), lint included,
# then builds the documentation (warnings are errors; the tutorials are executed).
test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(JOBS) --dist loadfile
	$(MAKE) --no-print-directory docs-build

# Builds the HTML documentation into docs/_build/html (open docs/_build/html/index.html).
docs: setup docs-build

docs-build:
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

# Every test, slow ones included.
test-all: setup
	$(PY) -m pytest -n $(JOBS) --dist loadfile -m ""

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache docs/_build docs/_generated docs/api/generated \
		docs/tutorials docs/sg_execution_times.rst
