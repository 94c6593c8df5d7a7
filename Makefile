PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo emulator bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# constraints.txt pins every package to the versions the suite was tested with (reproducible CI).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Lint: ruff, and mypy (strict on daemon/ and the adapter clients, default on the emulator;
# settings in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check daemon adapters tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The demo: the example inbox through the daemon and the in-process emulator, no API keys.
demo: $(STAMP)
	rm -rf demo && mkdir -p demo/inbox
	cp inbox_example/*.jsonl demo/inbox/
	$(BIN)/batchd run --emulate --root demo --once
	@echo
	@echo "Results are in demo/outbox/:"
	@ls -1 demo/outbox/
	@echo "Inputs were archived to demo/processed/. Try: $(BIN)/batchd status --root demo"

# The short forms of the performance benchmarks (a few minutes; docs/performance.md has the
# full runs): batchd beside the bare-SDK floor at N = 200 and 2,000, then peak memory at
# 10,000 and 50,000 lines in batches of up to 50,000.
bench: $(STAMP)
	$(BIN)/python bench/compare.py --short
	$(BIN)/python bench/memory.py --short

emulator: $(STAMP)
	$(BIN)/batchd emulator --host 127.0.0.1 --port 8089 --time-scale 0

clean:
	rm -rf $(VENV) demo .pytest_cache
