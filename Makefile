# Two entry points for people (README): `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall only when the dependency list changes.
STAMP := $(VENV)/.installed
# pytest in one process per CPU, each test file whole in one process (`loadfile`): the blocks of a document
# share state in order, as do the modules whose module fixtures start servers or a simulation.
PARALLEL := -n logical --dist loadfile

.PHONY: demo test test-thorough bench lint format clean

# uv (from PyPI, into .venv) installs the dependencies in about 10 s where pip takes about 45 s, and a fresh
# machine still needs only Python and make.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check uv

$(STAMP): pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/pytest $(PARALLEL)

# The random-history guarantees at full strength: Hypothesis's `thorough` profile (2,000 random examples per
# property; 20,000 policy cases in tests/core/test_policy_invariants.py), no per-test time limit. Minutes.
test-thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest $(PARALLEL) --timeout=0 -p no:cacheprovider tests/core tests/client tests/emulator tests/sim tests/robust

bench: $(STAMP)
	$(BIN)/python -m benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache
