# vegeta, the independent open-loop generator `make bench` holds bench's own ramp against
# (issue 19: bench must certify a rate within 15 % of what an independent generator
# certifies on the same system in the same run). Source it after lib.sh.
#
# vegeta_install puts a pinned vegeta in $ROOT/.tools/bin from the Go module proxy
# (`go install module@version`: its own module graph, so none of vegeta's dependencies
# enter flashgate's go.mod, and the checksum database vouches for the download).
# vegeta_ramp runs the same step schedule as `bench ramp` (start, ×step, then bisection)
# against a campaign of its own, each step with fresh users and request_ids, and certifies
# the highest rate whose p99 met the objective with at most 1 % errors.

VEGETA_VERSION=${VEGETA_VERSION:-v12.13.0}

vegeta_install() { # sets VEGETA to the binary's path
  VEGETA=$ROOT/.tools/bin/vegeta
  if [ -x "$VEGETA" ] && go version -m "$VEGETA" 2>/dev/null | grep -q "^\s*mod\s*github.com/tsenart/vegeta/v12\s*$VEGETA_VERSION"; then return 0; fi
  echo "vegeta: installing github.com/tsenart/vegeta/v12@$VEGETA_VERSION into $ROOT/.tools/bin"
  mkdir -p "$ROOT/.tools/bin"
  GOBIN=$ROOT/.tools/bin GOFLAGS= go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION" ||
    lib_die "vegeta: go install github.com/tsenart/vegeta/v12@$VEGETA_VERSION failed"
}

# vegeta_step rate duration-s campaign skus slo-ms step-id: one open-loop step; prints
# "held|broke p99_ms errors_pct answered ok" and writes the step's JSON report in $OUT/vegeta.
vegeta_step() {
  local rate=$1 secs=$2 campaign=$3 skus=$4 slo=$5 id=$6 dir=$OUT/vegeta
  mkdir -p "$dir"
  python3 - "$rate" "$secs" "$campaign" "$skus" "$id" >"$dir/targets-$id.jsonl" <<'EOF'
import base64, json, sys
rate, secs, campaign, skus, sid = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), sys.argv[5]
n = int(rate * secs * 1.05) + 10  # a little more than the step can use: -lazy reads as it goes
for i in range(n):
    body = json.dumps({"campaign_id": campaign, "sku": skus[i % len(skus)], "user_id": f"v{sid}-{i}",
                       "device_id": f"vd{sid}-{i}", "request_id": f"vr{sid}-{i}"}, separators=(",", ":"))
    print(json.dumps({"method": "POST", "url": "http://127.0.0.1:8080/v1/claims",
                      "header": {"Content-Type": ["application/json"]},
                      "body": base64.b64encode(body.encode()).decode()}))
EOF
  "$VEGETA" attack -format=json -lazy -rate="${rate%.*}/1s" -duration="${secs}s" -timeout=5s \
    -targets="$dir/targets-$id.jsonl" >"$dir/results-$id.bin"
  "$VEGETA" report -type=json "$dir/results-$id.bin" >"$dir/report-$id.json"
  rm -f "$dir/targets-$id.jsonl"
  python3 - "$dir/report-$id.json" "$slo" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); slo = float(sys.argv[2])
codes = r.get("status_codes") or {}
answered = sum(codes.values()); ok = codes.get("200", 0)
errors = answered - ok  # per-user limit and stock are loose: anything but 200 is an error here
p99 = r["latencies"]["99th"] / 1e6
pct = 100.0 * errors / answered if answered else 100.0
print("held" if p99 <= slo and pct <= 1.0 else "broke", f"{p99:.2f}", f"{pct:.2f}", answered, ok)
EOF
}

# vegeta_ramp campaign skus slo-ms start step-factor step-duration-s refine: prints each
# step, sets VEGETA_HELD to the highest rate that held (0 when none did) and VEGETA_OK to
# the 200s vegeta heard over all steps (each must be one row: bench verify counts them).
vegeta_ramp() {
  local campaign=$1 skus=$2 slo=$3 rate=$4 factor=$5 secs=$6 refine=$7 i=0 out verdict broke=0
  VEGETA_HELD=0 VEGETA_OK=0
  while :; do
    i=$((i + 1))
    out=$(vegeta_step "$rate" "$secs" "$campaign" "$skus" "$slo" "$i")
    verdict=${out%% *}
    VEGETA_OK=$((VEGETA_OK + ${out##* }))
    printf 'vegeta step %2d  %8.0f/s  %s (p99 ms, errors %%, answered, 200s)\n' "$i" "$rate" "$out"
    if [ "$verdict" = held ]; then VEGETA_HELD=$rate; else broke=$rate; break; fi
    rate=$(python3 -c "print(round($rate * $factor))")
    [ "$i" -lt 30 ] || break  # bounded: 500/s x1.4^30 is far beyond this machine
  done
  local k
  for ((k = 0; k < refine && broke > 0; k++)); do
    i=$((i + 1))
    rate=$(python3 -c "print(round(($VEGETA_HELD + $broke) / 2))")
    out=$(vegeta_step "$rate" "$secs" "$campaign" "$skus" "$slo" "$i")
    VEGETA_OK=$((VEGETA_OK + ${out##* }))
    printf 'vegeta step %2d  %8.0f/s  %s (bisection)\n' "$i" "$rate" "$out"
    if [ "${out%% *}" = held ]; then VEGETA_HELD=$rate; else broke=$rate; fi
  done
}
