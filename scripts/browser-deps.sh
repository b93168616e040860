#!/usr/bin/env bash
# What the browser tests (e2e/browser) need, installed when missing: Debian's chromium
# and node/npm (apt), and playwright-core at the version pinned in
# e2e/browser/package-lock.json (npm ci). `make test` runs this before the tests.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'browser-deps: %s\n' "$*" >&2; }
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { say "need root to apt-get install ${need[*]}; install them and rerun"; exit 1; }
  say "installing ${need[*]} with apt (first use only)"
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$ROOT/out"
  (apt-get update -qq && apt-get install -y -qq "${need[@]}") >"$ROOT/out/apt-browser.log" 2>&1 ||
    { say "apt-get install ${need[*]} failed; see out/apt-browser.log"; exit 1; }
fi
cd "$ROOT/e2e/browser"
# npm ci only when the installed tree is not from this lock file (a stamp of it).
if ! cmp -s package-lock.json node_modules/.flashgate-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json node_modules/.flashgate-lock
fi
