#!/usr/bin/env bash
# make bench: find the highest claim rate that holds the latency objective, verify every
# guarantee afterwards, measure the machine's ceilings, and write the HTML report.
#
# Brings the dev stack up (if it is not already), starts a settler and a gateway, creates
# a campaign whose stock is large and per-user limit loose (so the ramp measures the
# accept path, not sold-out answers), ramps, verifies, runs `bench limits`, and stops
# what it started. Exit: 0 held, 1 the objective broke, 2 a guarantee was violated.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH=/usr/local/go/bin:$PATH

SLO=${BENCH_SLO:-p99=10ms}
source scripts/lib.sh
lib_out bench
lib_init bench
make -s build

lib_admin_token bench
lib_start settler env "${SETTLER_ENV[@]}" bin/settler
# bench's bot farms vary their IP through X-Forwarded-For; the gateway believes it only
# from a trusted proxy, which bench on loopback stands in for here.
lib_start gateway env "${GATEWAY_ENV[@]}" FLASH_TRUSTED_PROXIES=127.0.0.1/32 bin/gateway
lib_wait_ready http://127.0.0.1:8082/readyz http://127.0.0.1:8081/readyz

CAMPAIGN=bench-$STAMP
BL=bench-bl-$STAMP
lib_campaign "$CAMPAIGN" "$BL" \
  --skus rp-50:50000000:50,rp-100:20000000:100 --per-user-limit 1000 --starts-in 2s \
  --duration 2h --voucher-ttl 72h

set +e
bin/bench ramp --target http://127.0.0.1:8080 --campaign "$CAMPAIGN" --skus rp-50,rp-100 \
  --users 2000000 --seed 2027 --mix bots=5%,retries=10%,invalid=1% --slo "$SLO" \
  --start 500/s --step x1.4 --step-duration 10s --refine 2 --wait-start 2s --lag-budget "${BENCH_LAG_BUDGET:-3ms}" \
  --out "$OUT"
ramp_rc=$?
env "${BENCH_VERIFY_ENV[@]}" bin/bench verify --campaign "$CAMPAIGN" --record "$OUT" --wait 300s
verify_rc=$?
bin/bench limits --from "$OUT" --lag-budget "${BENCH_LAG_BUDGET:-3ms}"
set -e

echo "report: $OUT/report.html"
[ $verify_rc = 2 ] && exit 2
exit $ramp_rc
