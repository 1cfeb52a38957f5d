# mailhub: `make run` starts the product, `make test` installs what the tests need and runs them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# Debian packages of the real servers the integration tests start (never the system services).
TEST_DEBS := dovecot-imapd redis-server postgresql chromium
TEST_BINARIES := /usr/sbin/dovecot /usr/bin/redis-server /usr/bin/chromium
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: help run lock test test-fast test-sqlite test-postgres lint format hooks migrations-check system-test-deps bootstrap \
	bench-ingest bench-web bench-web-postgres bench-scale bench-idle bench-latency bench-answer demo clean

help:
	@echo "make run    - install, migrate and start mailhub (web + background polling) on http://$(HOST):$(PORT)/"
	@echo "make test   - install everything the tests need and run lint + the whole test suite"
	@echo "make test-fast - the tests that need no server (SQLite, about a minute): the edit-test loop"
	@echo "make lint   - ruff format --check, ruff check, the import contract (lint-imports), mypy"
	@echo "make hooks  - install the git pre-commit hook (ruff check --fix + ruff format on staged files)"
	@echo "make lock   - regenerate requirements.lock and requirements-dev.lock from pyproject.toml"
	@echo "make demo   - a local Dovecot + SMTP sink, two demo mailboxes, and the product on :8000"
	@echo "make bench-ingest | bench-web | bench-web-postgres | bench-scale | bench-idle | bench-latency | bench-answer - the benchmarks (figures printed, see README)"

# The virtualenv. requirements.lock pins what the product needs at run time (`make run`, production);
# requirements-dev.lock adds the test and lint tools, with the same versions of the shared packages.
# Both are generated from pyproject.toml with hashes (`make lock`); --require-hashes makes pip refuse
# any file whose hash is not in the lock, on every machine.
$(VENV)/.installed: requirements.lock
	@if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then $(APT_GET) update -qq && $(APT_GET) install -y -qq python3-venv; \
		else echo "Python's venv module is missing: sudo apt-get install python3-venv"; exit 1; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements.lock
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements.lock requirements-dev.lock
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements.lock -r requirements-dev.lock
	touch $@

# Regenerates both lock files from pyproject.toml, keeping the pinned versions where they still fit
# (`make lock UPGRADE=1` moves every package to its newest allowed version). The development lock is
# constrained by the runtime lock, so both install the same Django, celery, ... side by side.
PIP_TOOLS := pip-tools==7.6.2
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes \
	--strip-extras --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade)
lock: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet $(PIP_TOOLS)
	$(PIP_COMPILE) -o requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra dev -c requirements.lock -o requirements-dev.lock pyproject.toml

# Local secrets of the embedded mode, generated once (never committed: see .gitignore).
.env: | $(VENV)/.installed
	@echo "Writing .env with a generated SECRET_KEY and encryption key (keep it: it decrypts mailbox passwords)"
	@$(PY) -c 'import secrets; from cryptography.fernet import Fernet; \
print("SECRET_KEY=" + secrets.token_urlsafe(50)); \
print("MAILHUB_ENCRYPTION_KEYS=" + Fernet.generate_key().decode())' > .env
	@chmod 600 .env

bootstrap: $(VENV)/.installed .env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py bootstrap_admin

run: bootstrap
	@echo "mailhub on http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/)"
	$(PY) manage.py run_mailhub --addr $(HOST) --port $(PORT)

system-test-deps:
	@missing=""; for bin in $(TEST_BINARIES); do [ -x $$bin ] || missing=yes; done; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=yes; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian packages for the test servers: $(TEST_DEBS)"; \
			$(APT_GET) update -qq && $(APT_GET) install -y -qq $(TEST_DEBS) >/dev/null; \
		else \
			echo "Missing test servers; run: sudo apt-get install $(TEST_DEBS)"; \
		fi; \
	fi

# The import contract and mypy read their configuration from pyproject.toml; both import the
# project's packages, hence PYTHONPATH=. (the project is not installed into the venv).
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	PYTHONPATH=. $(VENV)/bin/lint-imports
	PYTHONPATH=. $(VENV)/bin/mypy

# The git pre-commit hook of .pre-commit-config.yaml (ruff check --fix, ruff format on staged files).
hooks: $(VENV)/.installed-dev
	$(VENV)/bin/pre-commit install

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrations-check: $(VENV)/.installed-dev
	DJANGO_SETTINGS_MODULE=mailhub.settings_test $(PY) manage.py makemigrations --check --dry-run

# The whole suite on SQLite, then again on a throwaway PostgreSQL cluster (initdb in a temp dir).
# The browser and scale-out tests run once: the scale-out test always uses PostgreSQL itself.
test: $(VENV)/.installed-dev system-test-deps lint migrations-check test-sqlite test-postgres

# The tier for the edit-test loop: SQLite, no real server, no browser (about a minute on 2 cores).
# tests/conftest.py marks every test that requests a server fixture `integration`; the tests that
# start a server or a process themselves carry the marker in their module. The in-process fake IMAP
# server of tests/servers/fake_imap.py is no real server and stays in.
FAST_TESTS := -m "not integration and not browser and not scale"
test-fast: $(VENV)/.installed-dev
	$(VENV)/bin/pytest $(FAST_TESTS)

test-sqlite: $(VENV)/.installed-dev
	$(VENV)/bin/pytest

test-postgres: $(VENV)/.installed-dev
	$(PY) -m tests.postgres_run -m "not browser and not scale" --ignore=tests/test_demo.py

bench-ingest: $(VENV)/.installed-dev system-test-deps
	$(PY) bench/ingest.py

bench-web: $(VENV)/.installed
	$(PY) bench/web.py

bench-web-postgres: $(VENV)/.installed-dev system-test-deps
	$(PY) bench/web.py --postgres

bench-answer: $(VENV)/.installed-dev
	$(PY) bench/answer.py

bench-scale: $(VENV)/.installed-dev system-test-deps
	$(PY) bench/scale.py

# Resident memory per idling IMAP IDLE connection (N against a throw-away Dovecot).
bench-idle: $(VENV)/.installed-dev system-test-deps
	$(PY) bench/idle.py

# APPEND -> case and -> auto-reply through the real embedded product (run_mailhub with its worker,
# beat and IDLE supervisor) against a throw-away Dovecot and SMTP server; median and max of 20.
bench-latency: $(VENV)/.installed-dev system-test-deps
	$(PY) bench/latency.py

demo: $(VENV)/.installed-dev system-test-deps
	$(PY) demo/run.py --addr $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
