# shellcheck shell=bash
# Sourced by `make run`, scripts/demo.sh and scripts/bench.sh: the dev stack's
# least-privilege identities (docs/SECURITY.md), so each binary runs as its own Redis
# ACL user (scripts/redis-users.acl) and Postgres role (scripts/stack.sh, internal/store
# Grants). Dev passwords only: production injects its own secrets into the environment.
#
#   env "${GATEWAY_ENV[@]}" bin/gateway
_pg() { printf 'postgres://%s:%s_dev@127.0.0.1:15432/flashgate?sslmode=disable' "$1" "$1"; }
GATEWAY_ENV=(FLASH_REDIS_USERNAME=flashgate-gateway FLASH_REDIS_PASSWORD=flashgate-gateway-dev
  "FLASH_PG_URL=$(_pg flashgate_gateway)")
SETTLER_ENV=(FLASH_REDIS_USERNAME=flashgate-settler FLASH_REDIS_PASSWORD=flashgate-settler-dev
  "FLASH_PG_URL=$(_pg flashgate_settler)")
RISKCTL_ENV=(FLASH_REDIS_USERNAME=flashgate-riskctl FLASH_REDIS_PASSWORD=flashgate-riskctl-dev
  "FLASH_PG_URL=$(_pg flashgate_riskctl)")
# bench verify reads only; bench limits writes scratch keys and a scratch schema and runs
# as the default user and the owner (a lab tool, never pointed at production).
BENCH_VERIFY_ENV=(FLASH_REDIS_USERNAME=flashgate-bench FLASH_REDIS_PASSWORD=flashgate-bench-dev
  "FLASH_PG_URL=$(_pg flashgate_bench)")
unset -f _pg
