# Huizhen — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi.py
HOST ?= 127.0.0.1
PORT ?= 5000
WORKER_PORT ?= 5001
# The browser's Origin for Socket.IO: follows HOST and PORT unless set in the environment
ALLOWED_ORIGINS ?= http://$(HOST):$(PORT),http://localhost:$(PORT)
# The demo's booked consult lies an hour or so ahead: open rooms a day before their time so a
# newcomer can try the room at once (the default, and production's, is 15 minutes).
ROOM_OPENS_MINUTES_BEFORE ?= 1440

.PHONY: run test install install-dev lint migrate seed bench clean translations i18n-update i18n-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements.txt
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

## make translations: build the .mo catalogs from the .po files (run and test do it first)
translations: install
	$(BIN)/python -m webapp.i18n.catalogs compile

## make i18n-update: extract every message from the code into both locales' .po files (zh_CN
## entries left empty must then be translated); make i18n-check lists what is missing or stale
i18n-update: install
	$(BIN)/python -m webapp.i18n.catalogs update

i18n-check: install
	$(BIN)/python -m webapp.i18n.catalogs check

## make run: set up the virtualenv, build the SQLite database, load demo data, start the media
## worker (pre-call check) and the notification delivery worker (without SMTP_URL its mails are
## printed to the log) and serve on http://127.0.0.1:5000 (Ctrl-C stops all three)
run: install translations
	$(BIN)/flask db upgrade
	$(BIN)/flask seed-demo --if-empty
	@echo "Huizhen on http://$(HOST):$(PORT) — demo logins: rural@demo.test / specialist@demo.test / specialist2@demo.test / coordinator@demo.test, password huizhen-demo"
	@export ALLOWED_ORIGINS='$(ALLOWED_ORIGINS)' ROOM_OPENS_MINUTES_BEFORE='$(ROOM_OPENS_MINUTES_BEFORE)' MEDIA_WORKER_TOKEN=$$($(BIN)/python -c 'import secrets; print(secrets.token_hex(16))') \
	  MEDIA_WORKER_URL=http://127.0.0.1:$(WORKER_PORT); \
	$(BIN)/python -m mediaworker --port $(WORKER_PORT) & worker=$$!; \
	$(BIN)/python -m webapp.notifications.worker & notifier=$$!; \
	trap 'kill $$worker $$notifier 2>/dev/null' EXIT INT TERM; \
	$(BIN)/flask run --host $(HOST) --port $(PORT)

## make test: install test dependencies, lint, run the whole suite (TEST_DATABASE_URL picks the database)
test: install-dev translations
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .

migrate: install
	$(BIN)/flask db upgrade

seed: install
	$(BIN)/flask seed-demo --if-empty

clean:
	rm -rf $(VENV) instance test-artifacts .pytest_cache .ruff_cache
