#!/usr/bin/env bash
# `make dashboards-check`: every Grafana dashboard under deploy/grafana validated against the
# dashboard schema of the Grafana Foundation SDK (deploy/grafana/check: strict decoding, so an
# unknown or misspelt field, a wrong type or a missing required field fails; each panel's options,
# field config and Prometheus queries by their plugin's schema; only panel types and datasources
# it has a schema for). Built by Go from the pinned module (go.sum) through Go's build cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v go >/dev/null 2>&1; then
  echo "dashboards-check: Go is needed to build deploy/grafana/check, and 'go' is not on PATH" >&2
  exit 1
fi
dashboards=("$PWD"/deploy/grafana/*.json)
cd deploy/grafana/check
GOTOOLCHAIN=local GOFLAGS=-mod=mod go run . "${dashboards[@]}"
