#!/usr/bin/env bash
# make kinds: the redemption kinds side by side (BENCHMARKS.md "Redemption kinds side by
# side"): one gateway and one settler, then the same open-loop bench run - RATE claims/s
# for DURATION, distinct users - against a voucher campaign, a points_item campaign
# (every user holding points for one item) and a lottery campaign (a grand prize, a
# credit prize, 90 % no prize, stock for every prize so none runs out), one after the
# other in one invocation, then bench verify of each and bench odds of the lottery; the
# load average is printed before and after each, and each leg first waits for the 1-minute
# load to fall below KINDS_QUIET (1.0: the build, the setup and the settler's catch-up of
# the previous leg are over). Measure only on a quiet machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH=/usr/local/go/bin:$PATH

RATE=${KINDS_RATE:-1000}
DURATION=${KINDS_DURATION:-20s}
USERS=${KINDS_USERS:-40000}  # twice RATE x DURATION: users are drawn at random, few claim twice

say() { printf '\n== %s\n' "$*"; }
source scripts/lib.sh
lib_out kinds
lib_init kinds
make -s build
lib_admin_token kinds
export FLASH_USER_TOKEN_SECRET=${FLASH_USER_TOKEN_SECRET:-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')}
lib_start settler env "${SETTLER_ENV[@]}" bin/settler
lib_start gateway env "${GATEWAY_ENV[@]}" bin/gateway
lib_wait_ready http://127.0.0.1:8082/readyz http://127.0.0.1:8081/readyz

say "setup: a voucher campaign, a points_item campaign and a lottery campaign, each with stock for every claim"
lib_campaign "kv-$STAMP" "kv-bl-$STAMP" --skus v:$((USERS * 2)):1 --per-user-limit 1 \
  --starts-in 2s --duration 30m --voucher-ttl 72h
lib_campaign "kp-$STAMP" "kp-bl-$STAMP" --skus item:$((USERS * 2)):1 --points-price 100 \
  --points-users "$USERS" --per-user-limit 1 --starts-in 2s --duration 30m --voucher-ttl 72h
# A turntable: 1 in 10,000 a grand prize, ~10 % a credit, ~90 % no prize; every prize has
# stock for every draw, so each draw is decided by the odds, never by a sold-out prize.
lib_campaign "kl-$STAMP" "kl-bl-$STAMP" --lottery "grand:$((USERS * 2)):100:1,credit:$((USERS * 2)):1:999" \
  --no-prize-weight 9000 --per-user-limit 1 --starts-in 2s --duration 30m --voucher-ttl 72h
sleep 3

leg() { # name campaign sku
  say "$1: $RATE requests/s for $DURATION, open loop ($USERS users)"
  lib_quiet "${KINDS_QUIET:-1.0}"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  set +e
  bin/bench run --target http://127.0.0.1:8080 --campaign "$2" --skus "$3" \
    --rate "$RATE" --duration "$DURATION" --users "$USERS" --seed 7 --mix none --burst none \
    --connections 256 --quiet --out "$OUT/$1"
  local rc=$?
  set -e
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  [ $rc = 0 ] || [ $rc = 1 ] || lib_die "bench run ($1) failed (exit $rc)"
}
leg voucher "kv-$STAMP" v
leg points_item "kp-$STAMP" item
leg lottery "kl-$STAMP" draw  # a lottery ignores the sku asked for: the draw picks the prize
say "verify"
env "${BENCH_VERIFY_ENV[@]}" bin/bench verify --campaign "kv-$STAMP" --record "$OUT/voucher" --wait 120s
env "${BENCH_VERIFY_ENV[@]}" bin/bench verify --campaign "kp-$STAMP" --record "$OUT/points_item" --wait 120s
env "${BENCH_VERIFY_ENV[@]}" bin/bench verify --campaign "kl-$STAMP" --record "$OUT/lottery" --wait 120s
say "the lottery's odds: chi-square of its draws against the configured weights"
env "${BENCH_VERIFY_ENV[@]}" bin/bench odds --campaign "kl-$STAMP"
say "done: reports in $OUT"
