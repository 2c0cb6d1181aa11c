# genai-spectrum-kit: one obvious entry per job. `make synth` and `make test` set themselves up on a fresh machine
# (Python as pyproject.toml's requires-python allows, Node.js 22 or 24, make): a .venv from pinned requirements and
# the pinned CDK CLI.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
# Extra CDK CLI arguments, e.g. make synth CDK_ARGS="-c stage=prod"
CDK_ARGS ?=
PYTEST_ARGS ?=
# The suite runs on every core with pytest-xdist (at most 4 workers: each holds its own CDK kernel); the
# workers share the synthesized app variants (tests/conftest.py). PYTEST_XDIST=-n0 runs it in one process.
PYTEST_XDIST ?= -n auto --maxprocesses=4 --dist worksteal

export CDK_DISABLE_CLI_TELEMETRY := true
# Python's default bytecode cache, even where the environment turns it off: the suite's two workers and its app
# subprocesses then compile the kit and the rewritten tests once, and a second run compiles nothing (about 8% of
# the suite's time here). Caches are git-ignored, left out of every Lambda asset (stacks/shared/python_function.py)
# and removed by make clean.
unexport PYTHONDONTWRITEBYTECODE
# synth, test and bench are offline by design: no credential lookup against instance metadata.
synth test bench: export AWS_EC2_METADATA_DISABLED := true
# jsii prints an end-of-life banner on Node.js 20, which the CI machine has: the kit runs there, but the CDK's
# support for 20 ended on 2026-10-30 (https://docs.aws.amazon.com/cdk/v2/guide/node-versions.html); use 22 or 24.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: help setup synth test lint format bench clean lock deploy destroy

help:
	@echo "make synth   synthesize every stack into cdk.out/ and print a one-line summary per stack"
	@echo "make test    ruff, mypy, then the whole offline test suite"
	@echo "make lint    ruff and mypy on the kit's own code"
	@echo "make bench   measure synth, make test, handler import and first-call time, the L2 ingestion burst and the L3 validator (writes BENCHMARKS.md)"
	@echo "make clean   remove build output (keeps .venv and node_modules)"
	@echo "make deploy STACK=GenAiKit-1-Prompt   deploy one level (needs AWS credentials)"
	@echo "make destroy STACK=GenAiKit-1-Prompt  remove it again"

# Fails, naming the interpreter, its version and the range, unless the Python running it is one pyproject.toml's
# requires-python (">=A.B,<C.D") allows; the interpreter's name is its first argument. No tomllib (3.11+) and no
# f-strings, so that a Python too old for the kit still prints the line instead of a SyntaxError.
PY_IN_RANGE = import re, sys; \
  spec = re.search(r"^requires-python *= *(.+)$$", open("pyproject.toml").read(), re.M).group(1).strip(chr(34)); \
  bounds = [(op, (int(x), int(y))) for op, x, y in re.findall(r"(>=|<)([0-9]+)[.]([0-9]+)", spec)]; \
  v = sys.version_info[:2]; ok = all(v >= bound if op == ">=" else v < bound for op, bound in bounds); \
  sys.exit(0 if ok else "error: %s is Python %d.%d; the kit needs %s (requires-python in pyproject.toml): pick \
  another, e.g. make setup PYTHON=python3.12" % (sys.argv[1], v[0], v[1], spec))

# pyproject.toml declares the kit's importable packages: a change there re-runs the editable install. .venv is made
# again when its Python is outside requires-python or it has no pip (python3 -m venv without Debian's python3-venv
# leaves such a .venv behind), and only from a $(PYTHON) within the range.
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements.lock pyproject.toml
	@$(PY) -c 'import pip; $(PY_IN_RANGE)' $(PY) >/dev/null 2>&1 || { \
	  test ! -e $(VENV) || echo "$(VENV): its Python is outside requires-python, or it lacks pip: making it again"; \
	  $(PYTHON) -c '$(PY_IN_RANGE)' $(PYTHON) && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# setup installs the CDK CLI first, so that a missing Node.js stops it before the Python download; Node.js 20 still
# runs the kit (CI has it), so an older one only warns (https://docs.aws.amazon.com/cdk/v2/guide/node-versions.html).
node_modules/.installed: package.json package-lock.json
	@command -v node >/dev/null || { \
	  echo "error: node not found: the kit's CDK CLI needs Node.js 22 or 24 (https://nodejs.org)" >&2; exit 2; }
	@v=$$(node --version); test "$$(echo "$$v" | sed -E 's/^v([0-9]+).*/\1/')" -ge 22 2>/dev/null || \
	  echo "warning: Node.js $$v is older than 22; the AWS CDK supports Node.js 22 and 24" >&2
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: node_modules/.installed $(VENV)/.installed

synth: setup
	$(CDK) synth --quiet --no-notices $(CDK_ARGS)
	$(PY) scripts/synth_summary.py cdk.out

# Lint and type checks gate the tests: CI runs `make test`, so a lint finding fails CI too.
test: lint
	$(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

deploy: setup
	@test -n "$(STACK)" || { echo "usage: make deploy STACK=<stack id, see make synth>"; exit 2; }
	$(CDK) deploy $(STACK) --no-notices $(CDK_ARGS)

destroy: setup
	@test -n "$(STACK)" || { echo "usage: make destroy STACK=<stack id, see make synth>"; exit 2; }
	$(CDK) destroy $(STACK) --no-notices $(CDK_ARGS)

bench: export PYTEST_XDIST := $(PYTEST_XDIST)
bench: setup
	$(PY) scripts/bench.py

# pip freeze writes a local version label (torch==2.13.0+cpu, from a local CPU wheel); PyPI publishes no such
# release, so the lock keeps the public version, which a local build of it still satisfies (PEP 440).
# Written to a temporary file first: a failed pip freeze leaves the old lock as it was, not a lock of one comment.
lock: $(VENV)/.installed
	(echo "# Every package the venv holds, pinned (pip freeze). Regenerate with: make lock"; \
	 $(PY) -m pip freeze --exclude-editable | sed -E 's/^([^=]+==[^+]+)\+.*$$/\1/') > requirements.lock.tmp \
	 || { rm -f requirements.lock.tmp; exit 1; }
	mv requirements.lock.tmp requirements.lock

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	find . -name __pycache__ -not -path "./.venv/*" -not -path "./node_modules/*" -prune -exec rm -rf {} +
