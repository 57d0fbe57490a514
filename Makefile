# batch-processor — every command a developer or CI needs.
# Postgres is found or started by scripts/pg.sh (DATABASE_URL wins when set).
# Python tools (cargo-lambda, moto, cfn-lint) live in the git-ignored .venv.

SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
EVENT ?= events/orchestrate-dry-run.json
APP_DB ?= batch_processor
LAMBDA_PORT ?= 9000
VENV := .venv
TOOLS_STAMP := $(VENV)/.tools-v3
# The architecture `make package` builds. x86_64 here (the only Rust standard library on these
# machines); arm64 needs `rustup target add aarch64-unknown-linux-gnu` and zig (docs/deploy.md step 5).
ARCH ?= x86_64
export SAM_CLI_TELEMETRY := 0
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export LAMBDA_PORT

BENCH_ARGS ?=
# The tests of tests/api that need no service, by module: `make check` runs them.
CHECK_TESTS ?= offline:: template:: runbook::
# Where `make check` points the database and AWS: nothing listens there, so a
# test that needs a service fails instead of quietly finding one.
NO_SERVICE := DATABASE_URL=postgres://check@127.0.0.1:1/no-database AWS_ENDPOINT_URL=http://127.0.0.1:1

.PHONY: help demo check test e2e lint fmt migrate run watch invoke package artifact-e2e build-native bench tools ci

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

demo: tools ## fresh demo database, seed, orchestrate and process-order through cargo lambda watch, events through a local EventBridge
	scripts/with-moto.sh python3 scripts/local_lambda.py demo

check: $(TOOLS_STAMP) ## the quick loop, no service needed: rustfmt, clippy, the OpenAPI document, unit tests and the tests that need no Postgres or AWS
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	openapi-spec-validator openapi.yaml
	$(NO_SERVICE) $(CARGO) test --quiet --lib --bins
	$(NO_SERVICE) $(CARGO) test --quiet --test api -- $(CHECK_TESTS)

test: tools ## the whole suite: cargo tests (real Postgres, Secrets Manager, EventBridge, PgBouncer), the end-to-end test, and the same events against the artifact sam builds
	DATABASE_URL="$$(scripts/pg.sh)" scripts/with-moto.sh $(CARGO) test --lib --bins --tests --no-fail-fast
	$(MAKE) --no-print-directory e2e
	$(MAKE) --no-print-directory package
	$(MAKE) --no-print-directory artifact-e2e

e2e: tools ## every file in events/ through cargo lambda watch + invoke, and HTTP through the function URL
	python3 scripts/local_lambda.py e2e

lint: tools ## rustfmt, clippy (warnings are errors), cfn-lint and sam validate on template.yaml, openapi.yaml validation
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	cfn-lint template.yaml
	sam validate --lint --template template.yaml --region us-east-1
	openapi-spec-validator openapi.yaml

fmt: ## format the code
	$(CARGO) fmt --all

migrate: ## apply the migrations to the local database ($(APP_DB))
	DATABASE_URL="$$(scripts/pg.sh $(APP_DB))" $(CARGO) run --quiet -- migrate

run: migrate ## handle one event in-process, no emulator: make run EVENT=events/orchestrate.json
	DATABASE_URL="$$(scripts/pg.sh $(APP_DB))" $(CARGO) run --quiet -- invoke $(EVENT)

watch: tools ## cargo lambda watch on 127.0.0.1:$(LAMBDA_PORT) against the local database
	python3 scripts/local_lambda.py watch --db $(APP_DB)

invoke: tools ## send an event to a running `make watch`: make invoke EVENT=events/http-api-orchestrate.json
	python3 scripts/local_lambda.py invoke $(EVENT)

package: tools ## the artifact AWS runs: sam build (rust-cargolambda) for ARCH (x86_64 here), then checked
	@if [ "$(ARCH)" = x86_64 ] && [ "$$(uname -m)" = x86_64 ]; then export CARGO_LAMBDA_COMPILER=cargo; fi; \
	  sam build --beta-features --parameter-overrides Architecture=$(ARCH)
	@if ls certs/*.pem >/dev/null 2>&1; then \
	  mkdir -p .aws-sam/build/BatchProcessorFunction/certs && cp certs/*.pem .aws-sam/build/BatchProcessorFunction/certs/ && \
	  echo "package: shipped $$(ls certs/*.pem | tr '\n' ' ')as /var/task/certs/"; fi
	scripts/check-artifact.sh .aws-sam/build/BatchProcessorFunction/bootstrap $(ARCH)

artifact-e2e: tools ## every file in events/ against the bootstrap of `make package`, through a Runtime API of ours
	DATABASE_URL="$$(scripts/pg.sh)" scripts/with-moto.sh python3 scripts/local_lambda.py artifact

build-native: tools ## the release bootstrap for this machine's architecture (no zig, no downloads)
	$(CARGO) lambda build --release --compiler cargo

bench: tools ## the scale benchmark (BENCHMARKS.md), with a local EventBridge; BENCH_ARGS="--batches 1000000 --skip-original --orders 200"
	@mkdir -p target
	DATABASE_URL="$$(scripts/pg.sh)" scripts/with-moto.sh $(CARGO) bench --bench scale -- --report target/bench-report.md $(BENCH_ARGS)

tools: $(TOOLS_STAMP) ## install the tools into .venv (and pgbouncer, when root)
	@scripts/install-pgbouncer.sh

$(TOOLS_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5' 'cfn-lint==1.58.0' 'openapi-spec-validator==0.7.1' 'aws-sam-cli==1.170.0'
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps 'cargo-lambda==1.9.2'
	touch $@

ci: lint test ## what .ci/run runs
