#!/usr/bin/env bash
# Runs a command with the dev stack up: starts the stack if it is not already running,
# runs the command, and stops the stack again only if this script started it. The
# command's exit code is this script's.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
started=0
if ! "$ROOT/scripts/stack.sh" status >/dev/null 2>&1; then
  started=1
fi
# up also on a running stack: it loads the ACL users and roles the tests run as (idempotent).
"$ROOT/scripts/stack.sh" up || exit 1
cleanup() { if [ $started = 1 ]; then "$ROOT/scripts/stack.sh" down; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
"$@"
