# The two front-door commands: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-review test lint bench up clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

setup: $(VENV)/.installed

demo: setup
	$(BIN)/loopwright demo

demo-review: setup  # the weekly review on five weeks of seeded history
	$(BIN)/loopwright demo --review

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

test: lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/run.py --out docs/benchmarks.md
	$(BIN)/python bench/sandbox.py --out docs/benchmarks.md
	$(BIN)/python bench/replay.py --out docs/benchmarks.md
	$(BIN)/python bench/triggers.py --out docs/benchmarks.md
	$(BIN)/python bench/registry.py --out docs/benchmarks.md
	$(BIN)/python bench/agent.py --out docs/benchmarks.md
	$(BIN)/python bench/builder_eval.py --out docs/benchmarks.md
	$(BIN)/python bench/history.py --out docs/benchmarks.md
	$(BIN)/python bench/cli.py --out docs/benchmarks.md
	$(BIN)/python bench/rollups.py --out docs/benchmarks.md
	$(BIN)/python bench/review.py --out docs/benchmarks.md
	$(BIN)/python bench/review_loop.py --out docs/benchmarks.md
	$(BIN)/python bench/api.py --out docs/benchmarks.md
	$(BIN)/python bench/ui_idle.py --out docs/benchmarks.md

up: setup
	$(BIN)/loopwright up

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .bench
