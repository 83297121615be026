# The README's two commands: `make demo` and `make test`.
# torch is installed first, pinned: torch==2.13.0 is a local CPU wheel here,
# while an unpinned torch pulls several GB of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
TORCH := torch==2.13.0
OUT ?= outputs/demo

.PHONY: demo test install install-dev lint pytest bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) --upgrade pip
	$(PIP) $(TORCH)
	$(PIP) -c constraints.txt -e ".[grib]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -c constraints.txt -e ".[grib,dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# the main job as its Prefect flow (a temporary local server; no telemetry: offline machines)
demo: install
	DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 $(PY) -m flows.pipeline --out $(OUT)

lint: install-dev
	$(VENV)/bin/ruff check spatialmeta flows tests benchmarks
	$(VENV)/bin/ruff format --check spatialmeta flows tests benchmarks

pytest: install-dev
	$(VENV)/bin/pytest -n 2 --dist loadfile --durations=15

test: lint pytest

bench: install-dev
	$(PY) benchmarks/bench_pool.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
