PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo emulator clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# constraints.txt pins every package to the versions the suite was tested with (reproducible CI).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check daemon adapters tests bench
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check daemon adapters tests bench

emulator: $(STAMP)
	$(BIN)/batchd emulator --host 127.0.0.1 --port 8089 --time-scale 0

clean:
	rm -rf $(VENV) demo .pytest_cache
