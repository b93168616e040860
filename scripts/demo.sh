#!/usr/bin/env bash
# make demo: one whole flash sale, end to end, on this machine.
#
# Brings the dev stack up (if it is not already), builds, starts a settler and a gateway,
# creates a business line and a campaign (two SKUs, a few thousand vouchers), lets tens
# of thousands of distinct users race for them at the opening second (with bots, retries
# with the same request_id and some invalid requests), waits for settlement, verifies the
# guarantees against Redis and Postgres, prints the figures, runs a points mall rush and
# a turntable (a lottery: a rare prize, a phone credit delivered through a webhook to a
# fulfilment server the demo runs, ~90 % no prize; its draws verified, its prizes
# delivered, its odds checked), then plays a voucher's life (redeem against orders, a
# refund, transfers, a push to two tiers, the review per tier; bench life), and stops
# what it started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH=/usr/local/go/bin:$PATH

RATE=${DEMO_RATE:-4000}          # claims per second offered
DURATION=${DEMO_DURATION:-15s}
USERS=${DEMO_USERS:-40000}

say() { printf '\n== %s\n' "$*"; }
say "dev stack"
source scripts/lib.sh
lib_out demo
lib_init demo

say "build"
make -s build

lib_admin_token demo
# End-user tokens (CONTRACT.md "Verified identity"): the gateway verifies an HS256 JWT
# per request and bench signs one per user with the same key (both read this variable).
export FLASH_USER_TOKEN_SECRET=${FLASH_USER_TOKEN_SECRET:-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')}
say "start settler and gateway (logs in $OUT)"
lib_start settler env "${SETTLER_ENV[@]}" bin/settler
lib_start gateway env "${GATEWAY_ENV[@]}" bin/gateway
lib_wait_ready http://127.0.0.1:8082/readyz http://127.0.0.1:8081/readyz

CAMPAIGN=demo-$STAMP
BL=demo-payments-$STAMP
say "create business line $BL and campaign $CAMPAIGN"
# 2,000 x 50 + 1,000 x 100 = 200,000 of face value; the campaign may spend all of it.
lib_campaign "$CAMPAIGN" "$BL" \
  --bl-budget 250000 --budget 200000 --skus rp-50:2000:50,rp-100:1000:100 \
  --per-user-limit 1 --starts-in 3s --duration 30m --voucher-ttl 72h

say "flash sale: $USERS users (each with a signed user token), $RATE claims/s for $DURATION, opening-second burst, bots, retries, invalid requests"
set +e
bin/bench run --target http://127.0.0.1:8080 --campaign "$CAMPAIGN" --skus rp-50,rp-100 \
  --rate "$RATE" --duration "$DURATION" --users "$USERS" --seed 2027 \
  --mix bots=5%,retries=10%,invalid=1% --wait-start 3s --out "$OUT"
run_rc=$?
set -e
[ $run_rc = 0 ] || [ $run_rc = 1 ] || lib_die "bench run failed (exit $run_rc)"

say "settlement and guarantees"
env "${BENCH_VERIFY_ENV[@]}" bin/bench verify --campaign "$CAMPAIGN" --record "$OUT" --wait 120s

MALL=mall-$STAMP
say "points mall: $MALL, 200 items at 100 points, 2,000 users each granted points for one, rushing at the opening"
lib_campaign "$MALL" "mall-bl-$STAMP" --skus item:200:1 --points-price 100 --points-users 2000 \
  --per-user-limit 1 --starts-in 3s --duration 30m --voucher-ttl 72h
set +e
bin/bench run --target http://127.0.0.1:8080 --campaign "$MALL" --skus item \
  --rate 2000 --duration 3s --users 2000 --seed 2028 --mix retries=10% --wait-start 3s --out "$OUT/mall"
run_rc=$?
set -e
[ $run_rc = 0 ] || [ $run_rc = 1 ] || lib_die "bench run (points mall) failed (exit $run_rc)"
env "${BENCH_VERIFY_ENV[@]}" bin/bench verify --campaign "$MALL" --record "$OUT/mall" --wait 120s

TURN=wheel-$STAMP
FULFIL=127.0.0.1:${DEMO_FULFIL_PORT:-9099}
say "turntable: $TURN, 3,000 draws - a phone at 1 in 10,000 (stock 1), 10 of phone credit at ~10 % delivered to a fulfilment server at $FULFIL, ~90 % no prize"
if (exec 3<>"/dev/tcp/${FULFIL%:*}/${FULFIL#*:}") 2>/dev/null; then
  lib_die "port ${FULFIL#*:} is in use; set DEMO_FULFIL_PORT to a free one"
fi
# The third party the credit prizes are delivered to: it answers 200 and counts each
# Idempotency-Key (a key twice would be a prize delivered twice); lib_cleanup stops it.
lib_start fulfil bin/bench fulfil --addr "$FULFIL"
lib_wait_ready "http://$FULFIL/stats"
lib_campaign "$TURN" "wheel-bl-$STAMP" --lottery phone:1:5000:1,credit:3000:10:999 --no-prize-weight 9000 \
  --delivery-url "http://$FULFIL/prizes" --delivery-skus credit \
  --per-user-limit 1 --starts-in 3s --duration 30m --voucher-ttl 72h
set +e
# A lottery ignores the sku asked for (the draw picks the prize): "draw" is any name.
bin/bench run --target http://127.0.0.1:8080 --campaign "$TURN" --skus draw \
  --rate 1000 --duration 3s --users 3000 --seed 2029 --mix retries=10% --wait-start 3s --out "$OUT/turntable"
run_rc=$?
set -e
[ $run_rc = 0 ] || [ $run_rc = 1 ] || lib_die "bench run (turntable) failed (exit $run_rc)"
env "${BENCH_VERIFY_ENV[@]}" bin/bench verify --campaign "$TURN" --record "$OUT/turntable" --wait 120s
say "turntable: waiting for the credit prizes to be delivered"
for i in $(seq 120); do
  odds=$(env "${BENCH_VERIFY_ENV[@]}" bin/bench odds --campaign "$TURN" --json) || true
  delivering=$(printf '%s' "$odds" | grep -o '"delivering":[0-9]*' | head -1 | cut -d: -f2)
  [ "${delivering:-1}" = 0 ] && break
  [ "$i" = 120 ] && lib_die "turntable: $delivering prizes still delivering after 60s; see $OUT/settler.log"
  sleep 0.5
done
say "turntable: the odds check (chi-square of the draws against the configured weights) and the deliveries"
env "${BENCH_VERIFY_ENV[@]}" bin/bench odds --campaign "$TURN"
echo "fulfilment server: $(curl -fsS "http://$FULFIL/stats")  (keys = prizes received; repeats 0 = none delivered twice)"

say "the voucher's life: redeem against orders (a minimum spend, an excluded category, a refund), transfers, a push to two tiers, the review per tier"
bin/bench life --target http://127.0.0.1:8080 --admin http://127.0.0.1:8081 \
  --campaign "life-$STAMP" --business-line "life-bl-$STAMP" --holders 20

say "done: report $OUT/report.html, result $OUT/result.json"
