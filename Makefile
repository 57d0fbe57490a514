# batch-processor — every command a developer or CI needs.
# Postgres is found or started by scripts/pg.sh (DATABASE_URL wins when set).

SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
EVENT ?= events/orchestrate-dry-run.json
APP_DB ?= batch_processor

VENV := .venv
TOOLS_STAMP := $(VENV)/.tools-v1

.PHONY: help test lint fmt migrate invoke tools ci

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

test: tools ## the whole suite: real Postgres (found or started), local Secrets Manager, PgBouncer
	DATABASE_URL="$$(scripts/pg.sh)" scripts/with-moto.sh $(CARGO) test --all-targets --no-fail-fast

tools: $(TOOLS_STAMP) ## test tools: moto_server in a git-ignored venv, pgbouncer
	@scripts/install-pgbouncer.sh

$(TOOLS_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
	touch $@

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

migrate: ## apply the migrations to the local database ($(APP_DB))
	DATABASE_URL="$$(scripts/pg.sh $(APP_DB))" $(CARGO) run --quiet -- migrate

invoke: migrate ## handle one event locally: make invoke EVENT=events/orchestrate.json
	DATABASE_URL="$$(scripts/pg.sh $(APP_DB))" $(CARGO) run --quiet -- invoke $(EVENT)

ci: lint test ## what .ci/run runs
