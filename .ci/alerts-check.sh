#!/usr/bin/env bash
# `make alerts-check`: the Prometheus alert rules (deploy/prometheus/smsgw-alerts.yaml) checked
# by promtool (rule structure, PromQL, durations, templates) and unit-tested with promtool's
# rule tests (deploy/prometheus/smsgw-alerts.test.yaml: given these series, this alert fires
# then, and that one does not). promtool is built once with `go install` (a pinned version)
# into the tools cache outside the work tree, as buf and kustomize are: SMSGW_TOOLS_CACHE,
# default ~/.cache/smsgw-tools. PROMTOOL=/path/to/promtool uses that one instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# github.com/prometheus/prometheus v0.316.0 is Prometheus 3.x's module version.
PROMETHEUS_VERSION=v0.316.0

if [[ -z ${PROMTOOL:-} ]]; then
  source .ci/go-tool.sh
  PROMTOOL=$(go_tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION")
fi
"$PROMTOOL" check rules deploy/prometheus/smsgw-alerts.yaml
"$PROMTOOL" test rules deploy/prometheus/smsgw-alerts.test.yaml
