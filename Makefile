# Trackers: `make run` starts the app with embedded defaults; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install install-test run dev status stop test test-fast lint bench simulate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned and installed first so nothing pulls a different (CUDA) build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Every process of the app, supervised (config/run.py): the embedded Redis unless REDIS_URL names one,
# a production web server (granian, config/serve.py: a process per core; whitenoise serves the static
# files) and three Celery workers: "interactive" (training, the next round; with the sweepers' beat),
# "bulk" (import, embedding, index, bulk scoring: a big import never holds up the game) and "webhooks"
# (alert deliveries, in threads). It prepares the install first (migrations, static files, the ONNX
# encoder, the demo workspace). A process that dies is started again; Ctrl-C stops them all.
WEB_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
run: export TRACKERS_LOCAL_HTTP := 1
run: install
	@exec $(BIN)/python -m config.run --port $(PORT) --web-workers $(WEB_WORKERS)

# Development: the same, with Django's server (tracebacks, reloading, static files from static/).
dev: export DJANGO_DEBUG := 1
dev: install
	@exec $(BIN)/python -m config.run --dev --port $(PORT)

# The suite runs against real PostgreSQL and Redis (override these to point elsewhere).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/trackers
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL)

test: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python manage.py prepare_encoder
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install-test
	$(TEST_ENV) $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: install-test
	$(BIN)/python manage.py prepare_encoder
	$(BIN)/python bench/embedding.py
	$(BIN)/python bench/labeling.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/webhooks.py

# The app's learning loop (labeling.ml.loop) replayed with an oracle against random selection:
# learning curves, the estimates' interval coverage and threshold gaps (bench/results/simulation.json).
# 40 repeats per task (each a different held-out third and examples; 20 for the long SpamAssassin
# emails), so that a round behind random is told from noise; the whole target takes ~25 min.
RESULTS := bench/results/simulation.json
SIM := $(BIN)/python manage.py simulate_labeling --repeats 40 --output $(RESULTS)
DATA := ../shared/data
simulate: install
	$(BIN)/python manage.py prepare_encoder
	$(SIM) --file $(DATA)/sms_spam/dev.csv --positive spam
	$(SIM) --file $(DATA)/sms_spam/dev.csv --positive spam --typed-examples
	$(SIM) --file $(DATA)/spamassassin/dev.csv --positive spam --repeats 20
	$(SIM) --file $(DATA)/banking77/dev.csv --positive card_arrival --positive lost_or_stolen_card \
	    --positive exchange_rate --positive pin_blocked --positive top_up_failed
	$(SIM) --file $(DATA)/banking77/dev.csv --positive card_arrival --positive pin_blocked --typed-examples
	$(SIM) --file $(DATA)/clinc150/dev.csv --positive lost_luggage
	$(SIM) --file $(DATA)/banking77/dev.csv --topic \
	    --positive card_arrival --positive card_delivery_estimate --positive card_not_working --positive declined_card_payment \
	    --positive lost_or_stolen_card --positive compromised_card --positive pin_blocked --positive activate_my_card \
	    --positive card_payment_fee_charged
	$(SIM) --file $(DATA)/banking77/dev.csv --topic \
	    --positive top_up_failed --positive pending_top_up --positive top_up_reverted --positive top_up_limits \
	    --positive verify_top_up --positive topping_up_by_card
	$(SIM) --file $(DATA)/banking77/dev.csv --topic \
	    --positive cancel_transfer --positive declined_transfer --positive failed_transfer --positive pending_transfer \
	    --positive transfer_timing --positive transfer_not_received_by_recipient --positive transfer_fee_charged
	$(SIM) --file $(DATA)/multidogo/dev.jsonl --documents --topic \
	    --positive airline --positive fastfood --positive finance --positive insurance
	$(SIM) --file $(DATA)/multidogo/dev.jsonl --documents --topic --none \
	    --positive airline --positive fastfood --positive finance --positive insurance
	$(BIN)/python manage.py simulate_labeling --report $(RESULTS)
	# from production back to the game: drift, a review round of live traffic (bench/results/live.json)
	$(BIN)/python bench/live.py --repeats 10

# What runs (pids, uptime), and stopping a run from another shell.
status:
	@$(BIN)/python -m config.run status
stop:
	@$(BIN)/python -m config.run stop

clean:
	rm -rf var/media var/db.sqlite3 var/celerybeat-schedule* var/log var/redis var/supervisord.*
