#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 200000x: a count of
# executions; a duration such as 10s also works but can fail spuriously with "context
# deadline exceeded" on go1.26 under CPU starvation, golang/go#75804). `go test -fuzz`
# takes one package and one target per call, so the targets are found by name
# (func FuzzXxx(f *testing.F) in a tracked _test.go file) and run one at a time.
# A failing input is written by go test to <package>/testdata/fuzz/<FuzzXxx>/: fix the
# bug it shows and commit the file, so it runs as a seed in every `go test` from then on.
# FUZZFLAGS adds flags to each call (e.g. FUZZFLAGS='-parallel 1' on a busy machine).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-200000x}
FUZZFLAGS=${FUZZFLAGS:-}

mapfile -t targets < <(git ls-files '*_test.go' | xargs grep -HoE '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' |
  sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' | sort -u)
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no fuzz targets found" >&2; exit 1; }

failed=()
for t in "${targets[@]}"; do
  read -r dir name <<<"$t"
  echo "fuzz: ./$dir $name for $FUZZTIME"
  # shellcheck disable=SC2086
  if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" $FUZZFLAGS "./$dir"; then
    failed+=("./$dir $name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
  echo "fuzz: the failing inputs are in each package's testdata/fuzz/<target>/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no failure"
