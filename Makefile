# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test lint typecheck pytest test-pythons test-gunicorn-oldest soak bench bench-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# uWSGI is compiled from source; where that fails its matrix tests skip.
	$(BIN)/python -m pip install --quiet uwsgi \
	  || echo "note: uWSGI did not build here; its server-matrix tests will skip"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gunicorn -c gunicorn.conf.py examples.app:app

test: $(STAMP) lint typecheck pytest test-pythons test-gunicorn-oldest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict

pytest: $(STAMP)
	bash .ci/system-deps
	$(BIN)/python -m pytest -W error::ResourceWarning

# The in-process tests (not marked `server`) on the other supported Pythons,
# each in its own .venv-3.X with '.[dev]'; a version missing here is skipped
# with a note (.ci/test-pythons). The default Python runs everything above.
PYTHONS ?= 3.10 3.12 3.13
test-pythons:
	DEFAULT_PYTHON=$(BIN)/python bash .ci/test-pythons $(PYTHONS)

# The offloading worker's tests again on the oldest gunicorn pyproject.toml
# allows (the main suite runs on the newest), in .venv-gunicorn-oldest.
test-gunicorn-oldest: $(STAMP)
	bash .ci/test-gunicorn-oldest

# Benchmarks (bench/, docs/benchmarks.md): a full run rewrites bench/results.md
# and the charts; bench-check is a quick run that fails when a target is missed.
# BENCH_ARGS passes options through, e.g. BENCH_ARGS="--only download".
BENCH_STAMP = $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	bash bench/system-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-check: $(BENCH_STAMP)
	bash bench/system-deps
	$(BIN)/python -m bench --quick --check $(BENCH_ARGS)

# Soak (tests/soak/soak.py, docs/reliability.md): 64 connections for 60 s plus
# 200 aborted downloads and 20 stalled readers against the example app; fails
# unless every worker's descriptors and RSS come back. Not part of `make test`.
# SOAK_SECONDS=10 makes a quick run.
soak: $(STAMP)
	$(BIN)/python tests/soak/soak.py

clean:
	rm -rf $(VENV) .venv-3.* .mypy_cache .pytest_cache .ruff_cache
