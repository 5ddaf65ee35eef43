# Agentry — the front door. Everything a developer or CI needs is a target here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
export UV_PROJECT_ENVIRONMENT := .venv

RUN := $(UV) run --frozen

.PHONY: help install run token test test-ctrl-c lint fmt bench reconcile clean asyncapi rotate-secrets

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Installation chatter goes to stderr, so `make token` prints the token alone on stdout.
$(UV):
	@echo "installing uv $(UV_VERSION) from PyPI into $(TOOLS)" >&2
	@$(PYTHON) -m venv $(TOOLS) >&2
	@$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) >&2

.venv/.synced: $(UV) uv.lock pyproject.toml libs/common/pyproject.toml libs/dev/pyproject.toml services/*/pyproject.toml clients/*/pyproject.toml
	@$(UV) sync --frozen --all-packages >&2
	@touch $@

install: .venv/.synced ## install uv (from PyPI) and the workspace

run: install ## start NATS, PostgreSQL and the five services (data under .data/)
	$(RUN) python -m agentry_dev run

token: install ## print a development JWT (SUB=user ROLE=admin optional)
	@$(RUN) python -m agentry_dev token $(if $(SUB),--sub $(SUB)) $(if $(ROLE),--role $(ROLE))

test: install ## run every test against real NATS and PostgreSQL
	$(RUN) pytest -q -m "not slow"

test-ctrl-c: install ## `make run` started and stopped with Ctrl-C ten times in a row: nothing left behind (slow)
	$(RUN) pytest -q -m slow tests/test_make_run.py

lint: install ## ruff and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy libs/common/src libs/dev/src services/*/src clients/*/src

fmt: install ## apply ruff's formatting and safe fixes
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

clean: ## remove local data and environments
	rm -rf .data .venv $(TOOLS)

bench: install ## benchmarks (not tests): prints tables, then one JSON line per bench
	@for b in bench/*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done

asyncapi: install ## regenerate docs/asyncapi.json, the event contract (make test fails while it is stale)
	$(RUN) python -m agentry_common.asyncapi docs/asyncapi.json

reconcile: install ## check that every wallet's ledger sums to its balance (DATABASE_URL or the embedded .data)
	$(RUN) python -m agentry_billing.reconcile

.PHONY: chaos fuzz
chaos: install ## kill -9 runners/billing, restart NATS/PostgreSQL under run and Stripe-webhook load, check the money invariants (RUNS=3000)
	$(RUN) python -m tools.chaos $(if $(RUNS),--runs $(RUNS))

fuzz: install ## schemathesis over the gateway's OpenAPI with valid JWT and API keys (EXAMPLES=300 per route)
	$(RUN) python -m tools.fuzz $(if $(EXAMPLES),--max-examples $(EXAMPLES))

rotate-secrets: install ## re-encrypt every secret under the first key of MASTER_KEYS (after a key rotation)
	$(RUN) python -m agentry_keys.rotate
