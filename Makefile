# svcctl: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB := $(PYTHON) lab/labctl.py
LAB_HOSTS ?= 2
export LAB_HOSTS
# Debian releases to boot one more host of each, lab-<release>: LAB_RELEASES="bullseye trixie" make lab
LAB_RELEASES ?=

.PHONY: help deps venv lab lab-down lab-status lint test unit e2e demo bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

deps:  ## Debian packages (debootstrap, systemd-nspawn, clients); no server is started on this machine
	@bash scripts/install-system-deps.sh

$(BIN)/.installed: pyproject.toml | deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed  ## the virtualenv with svcctl and its dev tools

lab: deps  ## boot the lab hosts (idempotent; LAB_HOSTS=N for more, LAB_RELEASES="bullseye trixie" for lab-<release>)
	$(LAB) up --hosts $(LAB_HOSTS)$(if $(strip $(LAB_RELEASES)), --releases $(LAB_RELEASES))

lab-down:  ## remove every lab host, mount, netns, veth, cgroup and route
	$(LAB) down

lab-status:
	@$(LAB) status

lint: venv lint-ci  ## ruff, mypy, import contracts, the example CI pipelines
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --python-version 3.10 svcctl/hostlib  # host code; mypy checks no older target (3.9: tests)
	$(BIN)/mypy --config-file "" --python-version 3.10 --check-untyped-defs --follow-imports=silent \
	  --explicit-package-bases svcctl/drivers/host/*.py svcctl/drivers/*/observe.py svcctl/drivers/*/session.py \
	  # the host parts: their bodies, unannotated
	$(BIN)/lint-imports

.PHONY: lint-ci
lint-ci: venv  ## examples/ci: actionlint, zizmor (offline), GitLab CI's built-in schema, mypy on its scripts
	$(BIN)/actionlint examples/ci/github/workflows/*.yml
	$(BIN)/zizmor --offline --no-progress examples/ci/github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.gitlab-ci examples/ci/gitlab/.gitlab-ci.yml
	$(BIN)/mypy --strict examples/ci/scripts

unit: venv  ## unit tests only (no lab)
	$(BIN)/pytest -m 'not e2e'

test: deps venv lint lab  ## everything from a fresh Debian 12 machine: deps, venv, lab, lint, all tests
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests/unit tests/e2e  # unit first: they fail in seconds

demo: deps venv lab  ## the main job on the lab: validate, plan, apply, a query through a tunnel
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: LAB_HOSTS = 12  # benchmarks/plan.py times 8 hosts from lab-5 (the e2e tests use lab-1..lab-4)
bench: venv lab  ## benchmarks (figures and ratios against a baseline measured in the same run)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/plan.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/apply.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/tunnel.py

clean: lab-down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
