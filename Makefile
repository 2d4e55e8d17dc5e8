# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run demo test lint bench clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(BIN)/.installed
	$(BIN)/python app.py $(ARGS)

# The three real fleet fights and 82 real kills bundled for the tests (877 kills), imported into a
# database of their own (again: duplicates are skipped), then served: battles and entity pages
# to look at before zKillboard's feed has brought any. ARGS="--no-upstream" offline.
DEMO_DB ?= data/demo.sqlite3

demo: $(BIN)/.installed
	$(BIN)/python app.py import --db $(DEMO_DB) $(filter --no-upstream,$(ARGS)) tests/data/battles/*/killmails.json.gz tests/data/killmails/[0-9]*.json
	$(BIN)/python app.py --db $(DEMO_DB) $(ARGS)

# Most tests wait on sockets and subprocesses, not the CPU: 4 workers fit 2 cores (docs/development.md).
# --dist loadgroup keeps tests marked xdist_group on one worker. Exit 5 (no test ran) fails make.
WORKERS ?= 4

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Benchmarks of the real server over loopback (README "Performance"); ARGS="--quick" for a smoke run.
bench: $(BIN)/.installed
	$(BIN)/python -m bench $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
