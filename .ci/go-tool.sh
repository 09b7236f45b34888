# Sourced by the CI scripts: go_tool NAME PACKAGE VERSION prints the path of the tool NAME,
# built once with `go install PACKAGE@VERSION` into a cache outside the work tree, so fresh
# clones on the same machine reuse it: SMSGW_TOOLS_CACHE, default ~/.cache/smsgw-tools.
# Progress and errors go to stderr; it exits the script when the tool cannot be built.
go_tool() {
  local name=$1 package=$2 version=$3
  local cache=${SMSGW_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smsgw-tools}
  local dir=$cache/$name-$version
  if [[ ! -x $dir/$name ]]; then
    if ! command -v go >/dev/null 2>&1; then
      echo "$name: Go is needed to build $name $version (go install), and 'go' is not on PATH; install Go, or put a $name $version binary at $dir/$name" >&2
      exit 1
    fi
    echo "building $name $version into $dir (once; takes a few minutes)" >&2
    mkdir -p "$dir"
    if ! GOBIN=$(cd "$dir" && pwd) GOTOOLCHAIN=local GOFLAGS=-mod=mod go install "$package@$version" >&2; then
      echo "$name: go install $package@$version failed (see above; it may need a newer Go than $(go version))" >&2
      exit 1
    fi
  fi
  echo "$dir/$name"
}
