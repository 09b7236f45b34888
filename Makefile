# smsgw: two commands do everything on a fresh machine — `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(shell find protos -name '*.proto')
GEN_PY := libs/smsgw/v1
KAFKA_JARS ?= .cache/kafka-3.9.1/libs

.PHONY: run test test-unit test-integration lint venv proto clients kafka-jars bench bench-replay bench-priority bench-outage bench-schedule bench-webhooks bench-clients clean clean-data lint-protos proto-baseline config-docs k8s-check alerts-check dashboards-check chaos soak

venv: $(BIN)/.installed
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Python stubs for services, CLI and tests. Generated, never edited by hand.
proto: $(GEN_PY)/.stamp
$(GEN_PY)/.stamp: $(PROTOS) $(BIN)/.installed
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=libs --pyi_out=libs --grpc_python_out=libs $(PROTOS)
	touch $@

kafka-jars:
	bash deploy/kafka/fetch-jars.sh

# Runs the whole platform until Ctrl-C: on Apache Kafka when Java and Maven are there (its jars
# are fetched once), else on the embedded Tansu (docs/benchmarks.md says why Kafka first).
run: venv proto
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then bash deploy/kafka/fetch-jars.sh; fi
	$(BIN)/python -m smsgw_dev.devrun

# The whole suite: lint and type checks, then unit, in-process gRPC, and integration on Tansu
# and on Apache Kafka.
test: venv proto kafka-jars lint
	$(BIN)/python -m pytest -q

# ruff (pyproject's [tool.ruff]: its rules, and its formatter as the one code style) and mypy on
# the packages in [tool.mypy] files. `$(BIN)/ruff format .` fixes what the format check finds.
lint: venv proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-unit: venv proto
	$(BIN)/python -m pytest -q tests/unit

test-integration: venv proto kafka-jars
	$(BIN)/python -m pytest -q tests/integration

# Android (Java lite + gRPC Java, compile-checked) and iOS (Objective-C) stubs from protos/.
clients:
	bash clients/generate.sh

# buf lint + breaking-change check against protos/baseline/ (buf is built once with go install).
lint-protos:
	bash .ci/proto-check.sh

# A deliberate, reviewed contract change: rewrite protos/baseline/ (buf image + JSON).
proto-baseline: venv
	bash .ci/proto-check.sh --update-baseline

# Renders k8s/base, both overlays and every component, and validates every object offline.
k8s-check: venv
	bash .ci/k8s-check.sh

# The alert rules checked and unit-tested by promtool (built once with go install).
alerts-check:
	bash .ci/alerts-check.sh

# Fault scenarios under load on Apache Kafka (one node, and a three-node cluster), each judged by
# its ledger: lost, duplicated at the carrier, stuck, not watched (docs/reliability.md). About 15
# minutes; CHAOS_ARGS="--profile short" for two scenarios, --only NAME for one.
chaos: venv proto kafka-jars
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

# 30 minutes at 200 messages/s with a fault every 3 minutes, memory and file descriptors of every
# service sampled: fails on a lost, stuck or unreported duplicate message, or on growth
# (docs/reliability.md). SOAK_ARGS="--minutes 5" for a shorter one.
soak: venv proto kafka-jars
	$(BIN)/python -m tests.chaos.soak $(SOAK_ARGS)

# The Grafana dashboards validated against the Grafana Foundation SDK's dashboard schema.
dashboards-check:
	bash .ci/dashboards-check.sh

# docs/configuration.md from the services' settings models (a unit test fails when they differ).
config-docs: venv proto
	$(BIN)/python -m smsgw_dev.configuration_docs > docs/configuration.md

bench: venv proto kafka-jars
	$(BIN)/python bench/run_all.py

# Intake's projector rebuilding its store from 1 million events, and a restart (bench/replay.py).
bench-replay: venv proto kafka-jars
	$(BIN)/python bench/replay.py

# An OTP's accepted -> SENT in the middle of a 10,000-message campaign (bench/priority_lanes.py).
bench-priority: venv proto kafka-jars
	$(BIN)/python bench/priority_lanes.py

# A carrier down for long: the other carrier's messages, the adapter's memory and what recovery
# takes, with the delay topic and without it (docs/benchmarks.md, "A carrier down for long").
bench-outage: venv proto kafka-jars
	$(BIN)/python bench/carrier_outage.py

# Status webhooks to one endpoint: webhooks/s and CPU per webhook by concurrency and the endpoint's
# response time (bench/webhooks.py; about 2 minutes).
bench-webhooks: venv proto
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/webhooks.py --delay-ms 50 --webhooks 5000 --seconds 30

# How close to its send_at a scheduled message is SENT, routing killed in between (bench/scheduled_sends.py).
bench-schedule: venv proto kafka-jars
	$(BIN)/python bench/scheduled_sends.py

# What the Kafka client costs per record: aiokafka against librdkafka (confluent-kafka, installed
# here for this benchmark only), bulk and paced at 1,000 records/s (bench/kafka_clients.py; ~4 min).
bench-clients: venv proto kafka-jars
	$(BIN)/pip install -q "confluent-kafka==2.16.2"
	$(BIN)/python bench/kafka_clients.py

# What `make run` keeps between runs: the broker's log and the services' stores (keys included).
clean-data:
	rm -rf .run/kafka .run/state .run/dev-api-key

clean:
	rm -rf $(GEN_PY)/*_pb2*.py* $(GEN_PY)/.stamp .run clients/android/generated clients/ios/generated
