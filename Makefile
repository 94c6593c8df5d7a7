PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The developer venv belongs to this folder. A copy of the tree (cp -r) carries a venv whose
# scripts start the original folder's interpreter, and a stamp that would make `make install`
# a no-op: both markers name this folder, so a copied venv is made anew.
HERE := $(shell printf '%s' '$(CURDIR)' | cksum | cut -d' ' -f1)
MADE := $(VENV)/.made-for-$(HERE)
STAMP := $(VENV)/.installed-$(HERE)

# The service install (see README "Install"): a venv of its own at PREFIX with batchd and its
# runtime dependencies only (not editable, no test tools), pinned by constraints.txt.
PREFIX ?= /opt/batchd
VENV_FLAGS ?=
PIP_FLAGS ?=

.PHONY: install install-service test lint demo emulator bench clean

$(MADE):
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	touch $(MADE)

# constraints.txt pins every package to the versions the suite was tested with (reproducible CI).
$(STAMP): $(MADE) pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The developer route: an editable install with the test tools, in ./.venv.
install: $(STAMP)

# The production route: `sudo make install-service` (PREFIX=/opt/batchd). Run it again to
# upgrade (then `systemctl restart batchd`). The unit written to PREFIX/share/batchd/ has its
# paths set to PREFIX. VENV_FLAGS and PIP_FLAGS pass options through (tests/test_install.py
# installs offline with PIP_FLAGS="--no-deps --no-build-isolation").
install-service:
	$(PY) -m venv $(VENV_FLAGS) $(PREFIX)
	$(PREFIX)/bin/python -m pip install -q $(PIP_FLAGS) -c constraints.txt .
	install -d -m 0755 $(PREFIX)/share/batchd
	install -m 0644 README.md systemd/batchd.toml.example $(PREFIX)/share/batchd/
	sed 's|/opt/batchd|$(PREFIX)|g' systemd/batchd.service > $(PREFIX)/share/batchd/batchd.service
	chmod 0644 $(PREFIX)/share/batchd/batchd.service
	@echo "$$($(PREFIX)/bin/batchd --version) installed in $(PREFIX); unit: $(PREFIX)/share/batchd/batchd.service"

# Lint: ruff, and mypy (strict on daemon/ and the adapter clients, default on the emulator;
# settings in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check daemon adapters tests bench
	$(BIN)/mypy

# The suite runs on TEST_JOBS workers (pytest-xdist; default: one per core, at most 4): most
# of its time is spent waiting on daemon and emulator subprocesses. TEST_JOBS=0 runs it in one
# process.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
test: lint
	$(BIN)/pytest -q -n $(TEST_JOBS) $(PYTEST_ARGS)

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
	rm -rf $(VENV) demo .pytest_cache build
