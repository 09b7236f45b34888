#!/usr/bin/env bash
# Fetch the Apache Kafka broker runtime jars (see pom.xml) into a flat directory.
# Idempotent: does nothing when the directory already holds kafka_2.13-*.jar.
#   SMSGW_KAFKA_JARS  target directory (default: <repo>/.cache/kafka-3.9.1/libs)
#   MVN               maven executable (default: mvn)
#   MVN_FLAGS         extra maven flags, e.g. "-o" to use only ~/.m2
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml" | head -n1)"
jars="${SMSGW_KAFKA_JARS:-$repo/.cache/kafka-${version}/libs}"
mvn="${MVN:-mvn}"

shopt -s nullglob
existing=("$jars"/kafka_2.13-*.jar)
if (( ${#existing[@]} > 0 )); then
  echo "kafka jars already present in $jars (${existing[0]##*/}); nothing to do"
  exit 0
fi

if ! command -v "$mvn" >/dev/null 2>&1; then
  echo "error: '$mvn' not found; install Maven or set MVN=/path/to/mvn" >&2
  exit 1
fi

mkdir -p "$jars"
echo "fetching Kafka ${version} runtime jars into $jars"
# shellcheck disable=SC2086 # MVN_FLAGS is a word list on purpose
"$mvn" ${MVN_FLAGS:-} -q -B -f "$here/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$jars" -DincludeScope=runtime

existing=("$jars"/kafka_2.13-*.jar)
if (( ${#existing[@]} == 0 )); then
  echo "error: maven finished but no kafka_2.13-*.jar in $jars" >&2
  exit 1
fi
echo "ok: $(ls "$jars" | wc -l) jars in $jars"
