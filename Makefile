# `make demo`: set up everything and run the main job on embedded defaults (no servers).
# `make test`: set up everything (venv, packages, Debian tools, Kafka and Flink jars) and run
#              the whole suite, slow integration tests included. `.ci/run` calls it.
# `make test-fast`: the tests not marked slow. Layout: tests/unit/<area>/ (fast, one idea
#              each), tests/integration/ (real servers, whole pipelines, CLI subprocesses),
#              tests/bad_inputs/ (the bad-input corpus); `slow` marks, not folders, decide
#              what test-fast skips.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lock venv system-deps infra kafka-up kafka-down prism bench lint clean

# constraints.txt: the known-good versions (pip -c); pyproject.toml keeps the ranges
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools || { scripts/disk-hint.sh; exit 1; }
	$(PY) -m pip install -q -c constraints.txt -e ".[test]" || { scripts/disk-hint.sh; exit 1; }
	touch $(STAMP)

# Re-resolve .[test] from pyproject.toml's ranges alone in a scratch venv and freeze the result
# into constraints.txt (then `make test`, and commit both when it passes).
lock:
	rm -rf .cache/lock-venv && $(PYTHON) -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q --upgrade pip wheel setuptools
	.cache/lock-venv/bin/pip install -q -e ".[test]"
	{ sed -n '/^#/p' constraints.txt; .cache/lock-venv/bin/pip freeze --exclude-editable \
	  | grep -v '^mmalign'; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf .cache/lock-venv

venv: $(STAMP)

system-deps:
	./scripts/system-deps.sh

demo: $(STAMP)
	$(VENV)/bin/mmalign demo --out out/demo

# Kafka and the Flink job server jars from Maven Central (cached under .cache/); the test
# fixtures start and stop the servers themselves.
infra: $(STAMP)
	$(PY) -m mmalign.infra.kafka_broker fetch
	$(PY) -m mmalign.infra.flink_jobserver fetch
	$(PY) -m mmalign.infra.prism fetch

kafka-up: infra
	$(PY) -m mmalign.infra.kafka_broker start

kafka-down:
	$(PY) -m mmalign.infra.kafka_broker stop

# Beam Prism (the streaming job's runner), built with Go from the Beam module
prism: $(STAMP)
	$(PY) -m mmalign.infra.prism fetch

test: $(STAMP) system-deps infra
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP) system-deps
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf out .pytest_cache
