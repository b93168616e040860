# Shell helpers the scripts that run real processes share (demo, bench, peak,
# gateway_ab, with-stack): a run's output folder, refusing to start when the
# gateway/settler ports are taken, bringing the dev stack up if it is down (and taking it
# down again at exit only then), the admin token, starting processes with their logs in
# $OUT, waiting for readiness, creating a campaign, and stopping everything started on
# exit. Source it after setting ROOT (defining functions is all sourcing does);
# `lib_init NAME` installs the exit trap.

lib_out() { # kind: STAMP (now) and OUT=$ROOT/out/<kind>/$STAMP, made
  STAMP=$(date +%Y%m%d-%H%M%S)
  OUT=$ROOT/out/$1/$STAMP
  mkdir -p "$OUT"
}

lib_stack_up() { # the dev stack up; LIB_STARTED_STACK=1 when it was not running
  LIB_STARTED_STACK=0
  if ! "$ROOT/scripts/stack.sh" status >/dev/null 2>&1; then LIB_STARTED_STACK=1; fi
  # up also on a running stack: it loads the ACL users and the roles idempotently.
  "$ROOT/scripts/stack.sh" up
}

lib_stack_down() { # the dev stack down again, only if lib_stack_up started it
  if [ "${LIB_STARTED_STACK:-0}" = 1 ]; then "$ROOT/scripts/stack.sh" down; fi
}

lib_admin_token() { # prefix: FLASH_ADMIN_TOKEN (a random one unless set) and AUTH, its header
  export FLASH_ADMIN_TOKEN=${FLASH_ADMIN_TOKEN:-$1-$RANDOM$RANDOM}
  AUTH="Authorization: Bearer $FLASH_ADMIN_TOKEN"
}

lib_campaign() { # campaign business-line setup-flags...: create both through the admin API
  local campaign=$1 bl=$2; shift 2
  bin/bench setup --admin http://127.0.0.1:8081 --campaign "$campaign" --business-line "$bl" "$@"
}

lib_die() { printf '%s: ERROR: %s\n' "$LIB_NAME" "$*" >&2; exit 3; }

lib_init() { # name
  LIB_NAME=$1
  LIB_PIDS=()
  for port in 8080 8081 8082; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      lib_die "port $port is in use (a gateway or settler from 'make run'?); stop it and rerun"
    fi
  done
  trap lib_cleanup EXIT
  trap 'exit 130' INT TERM
  lib_stack_up
  # Each binary as its own Redis ACL user and Postgres role (docs/SECURITY.md).
  source scripts/dev-credentials.sh
}

lib_cleanup() {
  local rc=$?
  for p in "${LIB_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${LIB_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  lib_stack_down
  exit $rc
}

lib_start() { # logname command...: start in the background; LIB_LAST_PID is its pid
  local log=$1; shift
  "$@" >"$OUT/$log.log" 2>&1 &
  LIB_LAST_PID=$!
  LIB_PIDS+=("$LIB_LAST_PID")
}

lib_stop() { # pid: SIGTERM and wait (a graceful shutdown flushes the producer)
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

lib_wait_ready() { # url...: each answers 200 within 30 s
  local url i
  for url in "$@"; do
    for i in $(seq 300); do
      if curl -fsS -o /dev/null "$url"; then break; fi
      [ "$i" = 300 ] && lib_die "$url not ready after 30s; see $OUT/*.log"
      sleep 0.1
    done
  done
}

lib_quiet() { # [max-load [timeout-s]]: wait until the 1-minute load average is below
  # max-load (default 1.0) so a figure is not taken on a machine still busy with a build,
  # a setup or the settler catching up; gives up after timeout-s (default 240) and says so
  local max=${1:-1.0} timeout=${2:-240} waited=0
  while awk -v m="$max" '{exit !($1 >= m)}' /proc/loadavg; do
    if [ "$waited" -ge "$timeout" ]; then
      echo "$LIB_NAME: load still $(cut -d' ' -f1 /proc/loadavg) >= $max after ${timeout}s: this figure is NOT from a quiet machine" >&2
      return 0
    fi
    sleep 5; waited=$((waited + 5))
  done
  [ "$waited" = 0 ] || echo "quiet after ${waited}s (load $(cut -d' ' -f1-3 /proc/loadavg))"
}
lib_cpu_spec() { # gateway-pid settler-pid: bench run's --cpu value for the whole system
  local stack=${FLASH_STACK_DIR:-$ROOT/.stack} spec="gateway=$1,settler=$2" pid
  pid=$(cat "$stack/redis.pid" 2>/dev/null) && [ -n "$pid" ] && spec+=",redis=$pid"
  pid=$(cat "$stack/broker.pid" 2>/dev/null) && [ -n "$pid" ] && spec+=",broker=$pid"
  # The postmaster with its children: the backends, the WAL writer, the checkpointer.
  pid=$(head -1 "$stack/pg/data/postmaster.pid" 2>/dev/null) && [ -n "$pid" ] && spec+=",postgres=$pid"
  echo "$spec"
}
