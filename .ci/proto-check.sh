#!/usr/bin/env bash
# Lints the contracts in protos/ with buf and checks them for breaking changes against
# the committed baseline image (protos/baseline/smsgw-v1.binpb).
#
#   bash .ci/proto-check.sh                    lint, then breaking changes vs the baseline
#   bash .ci/proto-check.sh --update-baseline  lint, then rewrite the baselines from the
#                                              current protos (a deliberate, reviewed change)
#
# --update-baseline also rewrites protos/baseline/smsgw-v1.json, the baseline of
# tests/unit/test_proto_contract.py (the fast Python check that runs in `make test`).
#
# buf is built once with `go install` (needs Go; a few minutes) into a cache outside the
# work tree, so fresh clones on the same machine reuse it: SMSGW_TOOLS_CACHE, default
# ~/.cache/smsgw-tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUF_VERSION=v1.75.0
BASELINE_IMAGE=baseline/smsgw-v1.binpb   # relative to protos/, the buf module root
PYTHON=${PYTHON:-.venv/bin/python}

die() { echo "proto-check: $*" >&2; exit 1; }

update=false
case "${1:-}" in
  "") ;;
  --update-baseline) update=true ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) die "unknown argument '$1' (use --update-baseline or nothing)" ;;
esac

source .ci/go-tool.sh
buf=$(go_tool buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION")
buf_dir=$(dirname "$buf")
installed=$("$buf" --version 2>/dev/null) || die "$buf does not run; delete $buf_dir and retry"
[[ $installed == "${BUF_VERSION#v}" ]] || die "$buf is version $installed, expected ${BUF_VERSION#v}; delete $buf_dir and retry"

cd protos
echo "proto-check: buf $installed lint"
"$buf" lint || die "buf lint failed: fix the protos, or for a deliberate contract choice add a scoped ignore_only entry (with its reason) to protos/buf.yaml"

if $update; then
  mkdir -p "$(dirname "$BASELINE_IMAGE")"
  "$buf" build --exclude-source-info -o "$BASELINE_IMAGE"
  echo "proto-check: wrote protos/$BASELINE_IMAGE"
  cd ..
  [[ -x $PYTHON ]] || die "$PYTHON not found: run 'make venv' first (or set PYTHON)"
  "$PYTHON" tests/unit/test_proto_contract.py --update-baseline
  echo "proto-check: review and commit protos/baseline/ with the proto change"
  exit 0
fi

[[ -f $BASELINE_IMAGE ]] || die "no baseline image at protos/$BASELINE_IMAGE: create it with 'bash .ci/proto-check.sh --update-baseline'"
echo "proto-check: buf breaking --against protos/$BASELINE_IMAGE"
"$buf" breaking --against "$BASELINE_IMAGE" \
  || die "breaking changes against protos/$BASELINE_IMAGE: v1 only grows (add fields, never remove, rename or renumber; a breaking change is a new package smsgw.v2). If this change is deliberate and reviewed, run 'bash .ci/proto-check.sh --update-baseline'"
echo "proto-check: OK"
