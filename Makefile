# Agentry — the front door. Everything a developer or CI needs is a target here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell command -v $(PYTHON))
export UV_PROJECT_ENVIRONMENT := .venv

RUN := $(UV) run --frozen

.PHONY: help install run token test lint fmt bench chaos fuzz reconcile clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.synced: $(UV) uv.lock pyproject.toml libs/common/pyproject.toml services/*/pyproject.toml
	$(UV) sync --frozen --all-packages
	@touch $@

install: .venv/.synced ## install uv (from PyPI) and the workspace

run: install ## start NATS, PostgreSQL and the four services (data under .data/)
	$(RUN) python -m agentry_common.stack run

token: install ## print a development JWT (SUB=user ROLE=admin optional)
	@$(RUN) python -m agentry_common.stack token $(if $(SUB),--sub $(SUB)) $(if $(ROLE),--role $(ROLE))

test: install ## run every test against real NATS and PostgreSQL
	$(RUN) pytest -q -m "not slow"

lint: install ## ruff and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy libs/common/src services/*/src

fmt: install ## apply ruff's formatting and safe fixes
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

clean: ## remove local data and environments
	rm -rf .data .venv $(TOOLS)
