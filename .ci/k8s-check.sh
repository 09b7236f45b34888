#!/usr/bin/env bash
# `make k8s-check`: renders k8s/base, k8s/overlays/* and every component with kustomize and
# validates every object offline (smsgw_dev.k8s_check). kustomize is built once with
# `go install` (a pinned version, the same everywhere) into a cache outside the work tree,
# as .ci/proto-check.sh does for buf: SMSGW_TOOLS_CACHE, default ~/.cache/smsgw-tools.
# KUSTOMIZE=/path/to/kustomize uses that one instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUSTOMIZE_VERSION=v5.5.0
PYTHON=${PYTHON:-.venv/bin/python}

die() { echo "k8s-check: $*" >&2; exit 1; }

if [[ -z ${KUSTOMIZE:-} ]]; then
  source .ci/go-tool.sh
  KUSTOMIZE=$(go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION")
fi
[[ -x $PYTHON ]] || die "$PYTHON not found: run 'make venv' first (or set PYTHON)"
KUSTOMIZE=$KUSTOMIZE "$PYTHON" -m smsgw_dev.k8s_check
