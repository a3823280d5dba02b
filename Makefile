# Every target builds .venv first, so each works on a fresh clone with only Python and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
FLASK := $(BIN)/flask --app backup_api

.PHONY: run stand-in check test lint docs token fuzz soak bench snapshot dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime  ## serve the API with waitress on HOST:PORT
	$(FLASK) serve --host $(HOST) --port $(PORT)

stand-in: $(VENV)/.runtime  ## serve a stand-in for test suites (keeps nothing; tokens from BACKUP_API_JWT_SECRET)
	$(FLASK) serve --stand-in --host $(HOST) --port $(PORT)

check: $(VENV)/.dev  ## the quick loop while changing code: SQLite, in-process tests (under a minute)
	$(BIN)/python -m pytest --quick -p no:cacheprovider

test: $(VENV)/.dev  ## run the whole test suite
	$(BIN)/python -m pytest

lint: $(VENV)/.dev  ## ruff, and mypy on the package
	$(BIN)/ruff check .
	$(BIN)/mypy

docs: $(VENV)/.dev  ## build the manual (docs/, MkDocs) into site/; a broken link or anchor fails it
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --quiet

token: $(VENV)/.runtime  ## print a token owning PARTNER (make token PARTNER="casino_alpha casino_beta")
	@test -n "$(PARTNER)" || { echo 'usage: make token PARTNER=casino_alpha' >&2; exit 2; }
	@$(FLASK) token issue $(PARTNER)

fuzz: $(VENV)/.dev  ## a long schemathesis campaign against a real waitress process
	$(BIN)/python -m tests.fuzz

KILLS ?= 50
soak: $(VENV)/.dev  ## SIGKILL the real server KILLS times under load; a one-line summary
	$(BIN)/python -m tests.crash $(KILLS)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench: $(VENV)/.dev  ## the benchmark (see bench/run.py); installs wrk from Debian when missing
	@command -v wrk >/dev/null || $(SUDO) apt-get install -y wrk || { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }
	$(BIN)/python -m bench.run

SNAPSHOT ?= snapshots/backup-$(shell date -u +%Y%m%dT%H%M%SZ).db
snapshot: $(VENV)/.runtime  ## copy the live database to SNAPSHOT, safely while serving
	$(FLASK) db snapshot $(SNAPSHOT)

# PyInstaller builds for the machine it runs on: here, Linux x86-64.
DIST ?= dist
BUILD ?= build
dist: $(VENV)/.dev  ## the wheel and the single executable (game-backup-api), in DIST (dist/)
	$(BIN)/pip wheel --quiet --no-deps . -w $(DIST)
	$(BIN)/pyinstaller --onefile --name game-backup-api --noconfirm --log-level WARN --paths . \
		--distpath $(DIST) --workpath $(BUILD)/pyinstaller --specpath $(BUILD) packaging/game-backup-api.py

clean:
	rm -rf $(VENV) .pytest_cache __pycache__ tests/__pycache__ build dist site *.egg-info
