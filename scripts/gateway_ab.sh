#!/usr/bin/env bash
# gateway_ab.sh RATE GATEWAY_A GATEWAY_B [REPS]: two gateway builds, interleaved, at one
# fixed rate against the same settler on the running dev stack (make up), each on a
# fresh campaign for 8 s of plain claims. Per run it prints the script batch sizes (from
# the gateway's /metrics), the gateway's and Redis's CPU per accepted claim (bench run
# --cpu) and Redis's INFO commandstats for EVALSHA (every script call of the run: the
# gateway's claim.lua and durable.lua, the settler's confirm.lua). It resets Redis's
# command statistics: use it on the dev stack only (it starts the stack if it is down,
# and stops what it started, like make peak). Example (BENCHMARKS.md):
#   git worktree add /tmp/pre <commit> && go -C /tmp/pre build -o /tmp/pre/gateway ./gateway
#   make build && scripts/gateway_ab.sh 1000 /tmp/pre/gateway bin/gateway 3
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ $# -ge 3 ] || { echo "usage: $0 RATE GATEWAY_A GATEWAY_B [REPS]" >&2; exit 3; }
RATE=$1 A=$2 B=$3 REPS=${4:-2}
source scripts/lib.sh
lib_out gateway-ab
lib_init gateway_ab
lib_admin_token ab
lib_start settler env "${SETTLER_ENV[@]}" bin/settler
lib_wait_ready http://127.0.0.1:8082/readyz
for rep in $(seq "$REPS"); do for gw in "$A" "$B"; do
  lib_start gateway env "${GATEWAY_ENV[@]}" "$gw"
  GP=$LIB_LAST_PID
  lib_wait_ready http://127.0.0.1:8081/readyz
  C=ab-$rep-$RANDOM
  lib_campaign "$C" "bl-$C" \
    --skus "rp-50:50000000:50,rp-100:50000000:100" --per-user-limit 1000 --starts-in 1s --duration 1h --voucher-ttl 72h >/dev/null
  sleep 1.2
  redis-cli -p 16379 config resetstat >/dev/null
  bin/bench run --target http://127.0.0.1:8080 --campaign "$C" --skus rp-50,rp-100 --users 2000000 --seed 7 \
    --rate "$RATE" --duration 8s --burst none --mix none --quiet \
    --cpu "gateway=$GP,redis=$(cat .stack/redis.pid)" --out "$OUT/$C" >"$OUT/$C.txt" 2>&1 || true # exit 1 (objective) is expected at saturation
  bs=$(curl -s -H "$AUTH" http://127.0.0.1:8081/metrics | grep -E "script_batch_claims_(sum|count)" | awk '{print $2}' | paste -sd/)
  ev=$(redis-cli -p 16379 info commandstats | grep "^cmdstat_evalsha:" | sed 's/,rejected.*//')
  echo "$gw: claims/script calls $bs | $(grep -E '^    (gateway|redis) ' "$OUT/$C.txt" | awk '{print $1"="$5"us/claim"}' | tr '\n' ' ')| $ev"
  lib_stop "$GP"
done; done
