# modelway: `make run` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF_VERSION := 1.75.0
BUF := build/node/node_modules/.bin/buf
PROTOS := $(wildcard proto/modelway/v1/*.proto proto/modelway/v1/rest/*.proto)
GOOGLEAPIS := build/googleapis
DESCRIPTOR := build/modelway.pb
STAMP := $(VENV)/.installed

.PHONY: run run-scaled test test-postgres soak bench proto lint check install clean

run: proto
	$(PY) -m modelway up

# WORKERS (default 3) server processes behind one Envoy, sharing limits and credits through the Redis
# at MODELWAY_REDIS_URL (default redis://127.0.0.1:6379/0; `redis-server` on a Debian machine).
run-scaled: proto
	MODELWAY_REDIS_URL=$${MODELWAY_REDIS_URL:-redis://127.0.0.1:6379/0} $(PY) -m modelway up --workers $${WORKERS:-3}

# The whole suite on SQLite, then the end-to-end suite again with every stack on PostgreSQL
# (test_postgres.py starts servers of its own and ran already). Unit and end-to-end files run
# TEST_JOBS at a time (pytest-xdist, whole files per process: they wait on sockets more than they
# compute); tests/shared, 3 workers + Redis + PostgreSQL + 2 Envoys per test, measures timings
# that two such runs at once on 2 cores would distort, so it runs alone.
TEST_JOBS ?= 2
test: proto
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile tests/unit tests/e2e
	$(PY) -m pytest tests/shared
	MODELWAY_TEST_STORE=postgres $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile tests/e2e --deselect tests/e2e/test_postgres.py

# The end-to-end suite on PostgreSQL alone.
test-postgres: proto
	MODELWAY_TEST_STORE=postgres $(PY) -m pytest tests/e2e

# Mixed load for SOAK_SECONDS (default 120) against a real stack; fails when server RSS grows > 10%.
soak: proto
	$(PY) -m tests.soak

# modelway against its floor and LiteLLM on one mock upstream; prints a table, writes build/bench/results.json.
# About 30 minutes; BENCH_QUICK=1 is a 3 s / 1 repeat smoke run (about 4). BENCH_SECONDS, BENCH_REPEATS,
# BENCH_SYSTEMS (mock,floor,modelway,litellm,workers) and BENCH_WORKERS override the defaults.
LITELLM_VERSION := 1.106.2
LITELLM_VENV := build/bench/litellm-venv
BENCH_ARGS = $(if $(BENCH_QUICK),--quick) $(if $(BENCH_SECONDS),--seconds $(BENCH_SECONDS)) \
	$(if $(BENCH_REPEATS),--repeats $(BENCH_REPEATS)) $(if $(BENCH_SYSTEMS),--systems $(BENCH_SYSTEMS)) \
	$(if $(BENCH_WORKERS),--workers $(BENCH_WORKERS))

bench: proto $(LITELLM_VENV)/.installed-$(LITELLM_VERSION)
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	$(PY) -m bench $(BENCH_ARGS)

# LiteLLM in a virtualenv of its own: its dependencies never meet ours.
$(LITELLM_VENV)/.installed-$(LITELLM_VERSION):
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)'
	touch $@

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# googleapis' protos (annotations, http, httpbody, rpc) come from the
# googleapis-common-protos wheel: protoc reads them from site-packages, buf
# from a git-ignored copy (its registry is not reachable here).
$(GOOGLEAPIS)/.copied: $(STAMP)
	rm -rf $(GOOGLEAPIS) && mkdir -p $(GOOGLEAPIS)/google
	site=$$($(PY) -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parent.parent)'); \
	for d in api rpc; do mkdir -p $(GOOGLEAPIS)/google/$$d; cp $$site/$$d/*.proto $(GOOGLEAPIS)/google/$$d/; done
	touch $@

proto: $(DESCRIPTOR)

$(DESCRIPTOR): $(PROTOS) $(GOOGLEAPIS)/.copied
	$(PY) -m grpc_tools.protoc -Iproto -I$(GOOGLEAPIS) \
		--python_out=src --pyi_out=src --grpc_python_out=src \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=src \
		--include_imports --include_source_info --descriptor_set_out=$@ $(PROTOS)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix build/node @bufbuild/buf@$(BUF_VERSION)

lint: $(STAMP) $(GOOGLEAPIS)/.copied $(BUF)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(BUF) lint

# Regenerates the committed stubs and fails when they differ from the proto.
check: $(STAMP) $(GOOGLEAPIS)/.copied
	touch $(PROTOS) && $(MAKE) --no-print-directory proto
	@git diff --exit-code -- src/modelway/v1 || { echo "generated code is stale: run make proto and commit" >&2; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard src/modelway/v1)" || { echo "untracked generated files in src/modelway/v1" >&2; exit 1; }

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
