#!/usr/bin/env bash
# Runs a command with the dev stack up: starts the stack if it is not already running,
# runs the command, and stops the stack again only if this script started it. The
# command's exit code is this script's.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/lib.sh"
# up also on a running stack: it loads the ACL users and roles the tests run as (idempotent).
lib_stack_up || exit 1
trap lib_stack_down EXIT
trap 'exit 130' INT TERM
"$@"
