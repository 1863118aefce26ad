# Every target creates the virtual environment and installs what it needs
# when missing, so `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BASE   := $(VENV)/.installed
STAMP  := $(VENV)/.installed-test
HOST   ?= 127.0.0.1
PORT   ?= 22122
SPOOL  ?= var/spool

.PHONY: serve test test-fast bench bench-postgres lint demo clean

# What serving needs, and nothing else (no test extras: selenium, drivers).
$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(STAMP): $(BASE)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-dev: $(STAMP)
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@

serve: $(BASE)
	$(BIN)/starlingpy serve -h $(HOST) -p $(PORT) -q $(SPOOL)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Every unit test (by marker, wherever it lives), in seconds.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m unit

bench: $(STAMP)
	$(BIN)/python -m bench

# The PostgreSQL store against the journal store (needs PostgreSQL on 127.0.0.1:5432).
bench-postgres: $(STAMP)
	$(BIN)/python -m bench.postgres

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check starlingpy tests bench client workers

# The reference application: server, four graders, the web page and the dashboard.
demo: $(STAMP)
	$(BIN)/python -m workers.demo --port $(or $(WEB_PORT),8080) --dashboard-port $(or $(DASHBOARD_PORT),8081)

clean:
	rm -rf $(VENV) var .pytest_cache
