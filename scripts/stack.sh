#!/usr/bin/env bash
# The dev stack: Redis (AOF), Postgres 15 and a Kafka-protocol broker, on loopback, with
# all their state under .stack/ in the repo (ignored by git).
#
#   scripts/stack.sh up       install what is missing, start what is not running, wait until
#                             each server answers (idempotent)
#   scripts/stack.sh down     stop what is running, by PID
#   scripts/stack.sh status   exit 0 when all three answer (Prometheus is reported, not required)
#   scripts/stack.sh wipe     down, then delete .stack/ (all data)
#   REDIS=sentinel scripts/stack.sh up   (make up REDIS=sentinel) also a replica of Redis
#                             and three Sentinels (quorum 2) watching the primary as
#                             "flashgate": real failover (RELIABILITY.md, Redis HA)
#
# Ports (the defaults of FLASH_REDIS_ADDR, FLASH_PG_URL, FLASH_KAFKA_BROKERS):
#   Redis 127.0.0.1:16379, Postgres 127.0.0.1:15432, broker 127.0.0.1:19092.
#   With REDIS=sentinel: replica 127.0.0.1:16380, Sentinels 127.0.0.1:26379-26381
#   (FLASH_REDIS_SENTINELS=127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381).
# Prometheus on 127.0.0.1:19090 scrapes the processes `make run` starts
# (scripts/prometheus/prometheus.yml, alerting rules in scripts/prometheus/rules.yml).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${FLASH_STACK_DIR:-$ROOT/.stack}
REDIS_PORT=16379
# FLASH_STACK_PG_PORT: a second, private Postgres for a branch that adds a migration
# (`FLASH_STACK_DIR=/tmp/x FLASH_STACK_PG_PORT=25432 scripts/stack.sh pg`).
PG_PORT=${FLASH_STACK_PG_PORT:-15432}
BROKER_PORT=19092
REPLICA_PORT=16380
SENTINEL_PORTS="26379 26380 26381"
REDIS_MASTER_NAME=flashgate
PROM_PORT=19090
PG_BIN=/usr/lib/postgresql/15/bin
PG_USER=postgres # the unprivileged OS user the Postgres server runs as

say() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

apt_install() {
  say "installing $* with apt (first use only)"
  if [ "$(id -u)" != 0 ]; then die "need root to apt-get install $*; install it and rerun"; fi
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq "$@") >"$STACK/logs/apt.log" 2>&1 ||
    die "apt-get install $* failed; see $STACK/logs/apt.log"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name, tries (x0.1s), command...
  local name=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$name did not answer in $((tries / 10))s; see $STACK/logs/$name.log"
}

# --- Redis -----------------------------------------------------------------------------
redis_up() {
  command -v redis-server >/dev/null || apt_install redis-server
  command -v redis-server >/dev/null || die "redis-server is missing after apt-get install"
  # The Sentinel failover test (e2e) starts Sentinels of its own: a fresh machine gets
  # the binary with the server, not only with REDIS=sentinel.
  command -v redis-sentinel >/dev/null || apt_install redis-sentinel
  mkdir -p "$STACK/redis"
  # The aclfile is rewritten from scripts/redis-users.acl on every up (comments stripped:
  # an aclfile holds only user lines), so a change of the users reaches the next start.
  # A temporary file of its own: two `up`s at once (tests in parallel worktrees through
  # with-stack.sh) must not move each other's file away.
  local tmp
  tmp=$(mktemp "$STACK/redis/users.acl.XXXXXX")
  grep -v '^[[:space:]]*\(#\|$\)' "$ROOT/scripts/redis-users.acl" >"$tmp"
  chmod 644 "$tmp"
  mv "$tmp" "$STACK/redis/users.acl"
  if alive "$STACK/redis.pid" && redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; then
    say "redis already running on 127.0.0.1:$REDIS_PORT"; redis_acl; return
  fi
  port_open $REDIS_PORT && die "port $REDIS_PORT is taken by another process (not our redis)"
  # AOF with fsync every second: a kill -9 loses nothing acknowledged (the page cache
  # survives the process); a machine crash may lose the last second (DESIGN.md).
  # noeviction: a full Redis refuses writes (claims answer 503) instead of evicting stock,
  # budgets or idempotency records; the binaries refuse any other policy (internal/evict).
  redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir "$STACK/redis" \
    --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
    --daemonize yes --pidfile "$STACK/redis.pid" --logfile "$STACK/logs/redis.log" \
    --maxclients 10000 --protected-mode yes --aclfile "$STACK/redis/users.acl" \
    --masteruser flashgate-replica --masterauth flashgate-replica-dev >/dev/null
  wait_for redis 100 redis-cli -p $REDIS_PORT ping
  redis_acl
  say "redis up on 127.0.0.1:$REDIS_PORT (AOF everysec, data in $STACK/redis)"
}

# redis_acl loads flashgate's ACL users (scripts/redis-users.acl) into the running server
# with ACL SETUSER <name> reset <rules>: idempotent, and it never touches another user (the
# default user keeps its rights, so tests and operators are unaffected). A server started
# by this script also reads them from its aclfile at every start; one started before the
# aclfile existed gets them here, until its next restart (make down && make up) makes
# the aclfile its own.
redis_acl() { # [port]: the primary's unless given (the replica loads the same users)
  local port=${1:-$REDIS_PORT} line name n=0
  set -f # the rules hold glob characters (~fg:*)
  while read -r line; do
    case "$line" in "user "*) ;; *) continue ;; esac
    read -ra words <<<"$line"
    name=${words[1]}
    [ "$name" = default ] && continue
    redis-cli -p "$port" ACL SETUSER "$name" reset "${words[@]:2}" | grep -qx OK ||
      { set +f; die "ACL SETUSER $name failed (scripts/redis-users.acl)"; }
    n=$((n + 1))
  done <"$STACK/redis/users.acl"
  set +f
  say "redis :$port: $n ACL users loaded (scripts/redis-users.acl)"
}

redis_down() {
  if alive "$STACK/redis.pid"; then
    redis-cli -p $REDIS_PORT shutdown >/dev/null 2>&1 || kill "$(cat "$STACK/redis.pid")" 2>/dev/null || true
    stop_pid redis "$STACK/redis.pid"
  fi
}

# --- Redis high availability (REDIS=sentinel) ------------------------------------------
# A replica of the primary and three Sentinels (quorum 2: one Sentinel alone can neither
# fail over nor block one), on loopback beside the primary. Every node loads the ACL
# users; the replica (and the primary, after a failover demotes it) replicates as the
# flashgate-replica user. The binaries reach the primary through the Sentinels
# (FLASH_REDIS_SENTINELS, FLASH_REDIS_MASTER=flashgate; internal/flagenv).
redis_ha_up() {
  command -v redis-sentinel >/dev/null || apt_install redis-sentinel
  command -v redis-sentinel >/dev/null || die "redis-sentinel is missing after apt-get install redis-sentinel"
  mkdir -p "$STACK/redis-replica"
  if alive "$STACK/redis-replica.pid" && redis-cli -p $REPLICA_PORT ping >/dev/null 2>&1; then
    say "redis replica already running on 127.0.0.1:$REPLICA_PORT"
  else
    port_open $REPLICA_PORT && die "port $REPLICA_PORT is taken by another process (not our replica)"
    # A first start replicates 16379; after a failover the Sentinels re-point it.
    redis-server --bind 127.0.0.1 --port $REPLICA_PORT --dir "$STACK/redis-replica" \
      --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
      --daemonize yes --pidfile "$STACK/redis-replica.pid" --logfile "$STACK/logs/redis-replica.log" \
      --maxclients 10000 --protected-mode yes --aclfile "$STACK/redis/users.acl" \
      --replicaof 127.0.0.1 $REDIS_PORT --masteruser flashgate-replica --masterauth flashgate-replica-dev >/dev/null
    wait_for redis-replica 100 redis-cli -p $REPLICA_PORT ping
  fi
  redis_acl $REPLICA_PORT
  local p dir
  for p in $SENTINEL_PORTS; do
    dir=$STACK/sentinel-$p
    mkdir -p "$dir"
    if alive "$STACK/sentinel-$p.pid" && redis-cli -p "$p" ping >/dev/null 2>&1; then continue; fi
    port_open "$p" && die "port $p is taken by another process (not our sentinel)"
    # Sentinel rewrites its own file with what it learns (the current primary, the
    # other Sentinels); it is written only once, so a restart keeps that knowledge.
    if [ ! -f "$dir/sentinel.conf" ]; then
      printf '%s\n' "bind 127.0.0.1" "port $p" "dir $dir" \
        "sentinel monitor $REDIS_MASTER_NAME 127.0.0.1 $REDIS_PORT 2" \
        "sentinel down-after-milliseconds $REDIS_MASTER_NAME 1000" \
        "sentinel failover-timeout $REDIS_MASTER_NAME 10000" \
        "sentinel parallel-syncs $REDIS_MASTER_NAME 1" >"$dir/sentinel.conf"
    fi
    redis-sentinel "$dir/sentinel.conf" --daemonize yes --pidfile "$STACK/sentinel-$p.pid" \
      --logfile "$STACK/logs/sentinel-$p.log" >/dev/null
    wait_for "sentinel-$p" 100 redis-cli -p "$p" ping
  done
  say "redis HA: replica 127.0.0.1:$REPLICA_PORT, sentinels ${SENTINEL_PORTS// /,} watching '$REDIS_MASTER_NAME'" \
    "(primary now: $(redis-cli -p 26379 sentinel get-master-addr-by-name $REDIS_MASTER_NAME 2>/dev/null | paste -sd: -))"
}

redis_ha_down() { # whatever of the HA set is running, by PID
  local p
  for p in $SENTINEL_PORTS; do
    alive "$STACK/sentinel-$p.pid" && kill "$(cat "$STACK/sentinel-$p.pid")" 2>/dev/null
    stop_pid "sentinel-$p" "$STACK/sentinel-$p.pid"
  done
  if alive "$STACK/redis-replica.pid"; then
    redis-cli -p $REPLICA_PORT shutdown >/dev/null 2>&1 || kill "$(cat "$STACK/redis-replica.pid")" 2>/dev/null || true
    stop_pid redis-replica "$STACK/redis-replica.pid"
  fi
}

# --- Redis Cluster (REDIS=cluster) ------------------------------------------------------
# Three masters and three replicas on 127.0.0.1:17000-17005 (cluster bus on port+10000),
# each with AOF everysec, noeviction and flashgate's ACL users, formed once with
# `redis-cli --cluster create --cluster-replicas 1`; a restart keeps each node's
# nodes.conf, so the cluster re-forms by itself. Issue 15: the binaries reach it through
# go-redis's cluster client (FLASH_REDIS_CLUSTER) once every script call is on one slot.
CLUSTER_PORTS="17000 17001 17002 17003 17004 17005"
redis_cluster_up() {
  local p dir
  for p in $CLUSTER_PORTS; do
    dir=$STACK/cluster-$p
    mkdir -p "$dir"
    if alive "$STACK/cluster-$p.pid" && redis-cli -p "$p" ping >/dev/null 2>&1; then continue; fi
    port_open "$p" && die "port $p is taken by another process (not our cluster node)"
    redis-server --bind 127.0.0.1 --port "$p" --dir "$dir" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
      --daemonize yes --pidfile "$STACK/cluster-$p.pid" --logfile "$STACK/logs/cluster-$p.log" \
      --maxclients 10000 --protected-mode yes --aclfile "$STACK/redis/users.acl" \
      --masteruser flashgate-replica --masterauth flashgate-replica-dev >/dev/null
    wait_for "cluster-$p" 100 redis-cli -p "$p" ping
  done
  for p in $CLUSTER_PORTS; do redis_acl "$p" >/dev/null 2>&1 || die "ACL users on cluster node $p"; done
  if ! redis-cli -p 17000 cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
    if [ "$(redis-cli -p 17000 cluster info 2>/dev/null | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = 1 ]; then
      say "forming the cluster (3 masters, 3 replicas)"
      # shellcheck disable=SC2046
      redis-cli --cluster create $(for p in $CLUSTER_PORTS; do printf '127.0.0.1:%s ' "$p"; done) \
        --cluster-replicas 1 --cluster-yes >"$STACK/logs/cluster-create.log" 2>&1 ||
        die "redis-cli --cluster create failed; see $STACK/logs/cluster-create.log"
    fi
    wait_for "cluster state ok" 300 sh -c 'redis-cli -p 17000 cluster info | grep -q "^cluster_state:ok"'
  fi
  # the replicas' roles reach every node's view a moment after the slots do
  wait_for "cluster replicas" 100 sh -c '[ "$(redis-cli -p 17000 cluster nodes | grep -c slave)" = 3 ]'
  say "redis cluster up on 127.0.0.1:${CLUSTER_PORTS// /,} (3 masters, 3 replicas)"
}

redis_cluster_down() {
  local p
  for p in $CLUSTER_PORTS; do
    if alive "$STACK/cluster-$p.pid"; then
      redis-cli -p "$p" shutdown >/dev/null 2>&1 || kill "$(cat "$STACK/cluster-$p.pid")" 2>/dev/null || true
      stop_pid "cluster-$p" "$STACK/cluster-$p.pid"
    fi
  done
}

redis_ha_status() {
  alive "$STACK/redis-replica.pid" || return 0
  if redis-cli -p $REPLICA_PORT ping >/dev/null 2>&1; then echo "replica  up   127.0.0.1:$REPLICA_PORT"; else echo "replica  down"; fi
  local p
  for p in $SENTINEL_PORTS; do
    if redis-cli -p "$p" ping >/dev/null 2>&1; then echo "sentinel up   127.0.0.1:$p"; else echo "sentinel down 127.0.0.1:$p"; fi
  done
}

# --- Postgres --------------------------------------------------------------------------
pg_up() {
  [ -x "$PG_BIN/initdb" ] || apt_install postgresql-15
  [ -x "$PG_BIN/initdb" ] || die "Postgres 15 binaries are missing at $PG_BIN after apt-get install postgresql-15"
  id "$PG_USER" >/dev/null 2>&1 || die "OS user '$PG_USER' is missing (it comes with Debian's postgresql-15 package)"
  local data=$STACK/pg/data sock=$STACK/pg/run
  if [ -f "$data/postmaster.pid" ] && kill -0 "$(head -1 "$data/postmaster.pid")" 2>/dev/null &&
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p $PG_PORT; then
    say "postgres already running on 127.0.0.1:$PG_PORT"; pg_roles; return
  fi
  port_open $PG_PORT && die "port $PG_PORT is taken by another process (not our postgres)"
  mkdir -p "$STACK/pg" "$sock"
  # The server refuses to run as root, so it runs as $PG_USER, which must be able to reach
  # the folder: open the path's directories for traversal (x only) where they are not.
  local d=$STACK/pg
  while [ "$d" != / ]; do
    if ! runuser -u "$PG_USER" -- test -x "$d" 2>/dev/null; then chmod o+x "$d"; fi
    d=$(dirname "$d")
  done
  chown "$PG_USER" "$STACK/pg" "$sock"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a Postgres cluster in $data"
    runuser -u "$PG_USER" -- "$PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$STACK/logs/initdb.log" 2>&1 ||
      die "initdb failed; see $STACK/logs/initdb.log"
  fi
  touch "$STACK/logs/postgres.log"; chown "$PG_USER" "$STACK/logs/postgres.log"
  runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" -D "$data" -l "$STACK/logs/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB" \
    start >/dev/null || die "postgres did not start; see $STACK/logs/postgres.log"
  wait_for postgres 300 "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p $PG_PORT
  pg_roles
  say "postgres up on 127.0.0.1:$PG_PORT (database flashgate, data in $data)"
}

# pg_roles creates (idempotently, on every up) the owner role flashgate and its database,
# and the least-privilege login roles of the binaries (docs/SECURITY.md). Their grants
# are applied by the owner after migrating (internal/store: Migrate then Grant), so
# pg_roles ends by running bin/migrate as the owner.
pg_roles() {
  local sock=$STACK/pg/run
  local psql=("$PG_BIN/psql" -q -h "$sock" -p $PG_PORT -U postgres -v ON_ERROR_STOP=1)
  if [ "$(runuser -u "$PG_USER" -- "${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname='flashgate'")" != 1 ]; then
    runuser -u "$PG_USER" -- "${psql[@]}" -c "CREATE ROLE flashgate LOGIN PASSWORD 'flashgate'" >/dev/null
  fi
  if [ "$(runuser -u "$PG_USER" -- "${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname='flashgate'")" != 1 ]; then
    runuser -u "$PG_USER" -- "${psql[@]}" -c "CREATE DATABASE flashgate OWNER flashgate" >/dev/null
  fi
  # The binaries' roles: LOGIN, no other attribute (not superuser, no CREATEDB/CREATEROLE,
  # no BYPASSRLS). Dev passwords "<role>_dev" (scripts/dev-credentials.sh).
  local role
  for role in flashgate_gateway flashgate_settler flashgate_riskctl flashgate_bench; do
    if [ "$(runuser -u "$PG_USER" -- "${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname='$role'")" != 1 ]; then
      runuser -u "$PG_USER" -- "${psql[@]}" -c "CREATE ROLE $role LOGIN PASSWORD '${role}_dev'" >/dev/null
    fi
  done
  # CONNECT only on flashgate's database; no CREATE (a schema) on it. Tables: the grants.
  runuser -u "$PG_USER" -- "${psql[@]}" -c "REVOKE CREATE ON DATABASE flashgate FROM PUBLIC;
    GRANT CONNECT ON DATABASE flashgate TO flashgate_gateway, flashgate_settler, flashgate_riskctl, flashgate_bench" >/dev/null
  command -v go >/dev/null || die "go is not on PATH (needed to build bin/migrate)"
  mkdir -p "$ROOT/bin"
  (cd "$ROOT" && go build -o bin/migrate ./migrate) || die "building ./migrate failed"
  # As the owner (its dev password from the environment, not the command line).
  FLASH_PG_URL="postgres://flashgate:flashgate@127.0.0.1:$PG_PORT/flashgate?sslmode=disable" "$ROOT/bin/migrate" \
    >>"$STACK/logs/migrate.log" 2>&1 || die "migrations failed; see $STACK/logs/migrate.log"
  say "postgres: roles flashgate_gateway, _settler, _riskctl, _bench; schema migrated and granted"
}

pg_down() {
  local data=$STACK/pg/data
  if [ -f "$data/postmaster.pid" ] && kill -0 "$(head -1 "$data/postmaster.pid")" 2>/dev/null; then
    runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      kill -9 "$(head -1 "$data/postmaster.pid")" 2>/dev/null || true
  fi
}

# --- Broker ----------------------------------------------------------------------------
broker_up() {
  command -v kcat >/dev/null || apt_install kcat
  if alive "$STACK/broker.pid" && port_open $BROKER_PORT; then
    say "broker already running on 127.0.0.1:$BROKER_PORT"; return
  fi
  port_open $BROKER_PORT && die "port $BROKER_PORT is taken by another process (not our broker)"
  command -v go >/dev/null || die "go is not on PATH (needed to build the dev broker)"
  mkdir -p "$STACK/broker" "$ROOT/bin"
  (cd "$ROOT" && go build -o bin/devbroker ./devbroker) || die "building devbroker failed"
  nohup "$ROOT/bin/devbroker" -addr 127.0.0.1:$BROKER_PORT -data-dir "$STACK/broker" \
    >>"$STACK/logs/broker.log" 2>&1 </dev/null &
  echo $! >"$STACK/broker.pid"
  wait_for broker 300 port_open $BROKER_PORT
  say "broker up on 127.0.0.1:$BROKER_PORT (kfake with DataDir $STACK/broker)"
}

broker_down() { alive "$STACK/broker.pid" && kill "$(cat "$STACK/broker.pid")" 2>/dev/null; stop_pid broker "$STACK/broker.pid"; }

# --- Prometheus ------------------------------------------------------------------------
# Debian's prometheus (also brings promtool, which `make test` uses on the rules). Its
# config and rules are read from the repo, so a change reaches the next up (a running
# server is told to reload with SIGHUP).
prom_up() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null || apt_install prometheus
  command -v prometheus >/dev/null || die "prometheus is missing after apt-get install prometheus"
  local conf=$ROOT/scripts/prometheus/prometheus.yml
  promtool check config "$conf" >"$STACK/logs/promtool.log" 2>&1 ||
    die "scripts/prometheus/prometheus.yml or its rules are invalid; see $STACK/logs/promtool.log"
  if alive "$STACK/prometheus.pid" && port_open $PROM_PORT; then
    kill -HUP "$(cat "$STACK/prometheus.pid")"
    say "prometheus already running on 127.0.0.1:$PROM_PORT (config reloaded)"; return
  fi
  port_open $PROM_PORT && die "port $PROM_PORT is taken by another process (not our prometheus)"
  mkdir -p "$STACK/prometheus"
  nohup prometheus --config.file="$conf" --storage.tsdb.path="$STACK/prometheus" \
    --storage.tsdb.retention.time=7d --web.listen-address=127.0.0.1:$PROM_PORT \
    >>"$STACK/logs/prometheus.log" 2>&1 </dev/null &
  echo $! >"$STACK/prometheus.pid"
  wait_for prometheus 300 port_open $PROM_PORT
  say "prometheus up on http://127.0.0.1:$PROM_PORT (scraping gateway :8081, settler :8082)"
}

prom_down() { alive "$STACK/prometheus.pid" && kill "$(cat "$STACK/prometheus.pid")" 2>/dev/null; stop_pid prometheus "$STACK/prometheus.pid"; }

stop_pid() { # name pidfile: wait up to 10s for a stopped process, then SIGKILL
  local name=$1 pidf=$2
  [ -f "$pidf" ] || return 0
  local pid; pid=$(cat "$pidf")
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then say "$name did not stop in 10s; killing"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$pidf"
}

status() {
  local ok=0
  if redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; then echo "redis    up   127.0.0.1:$REDIS_PORT"; else echo "redis    down"; ok=1; fi
  if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p $PG_PORT 2>/dev/null; then echo "postgres up   127.0.0.1:$PG_PORT"; else echo "postgres down"; ok=1; fi
  if port_open $BROKER_PORT; then echo "broker   up   127.0.0.1:$BROKER_PORT"; else echo "broker   down"; ok=1; fi
  if port_open $PROM_PORT; then echo "prometheus up 127.0.0.1:$PROM_PORT"; else echo "prometheus down"; fi
  return $ok
}

mkdir -p "$STACK/logs"
case "${1:-}" in
  up)
    redis_up
    case "${REDIS:-}" in
      sentinel) redis_ha_up ;;
      cluster) redis_cluster_up ;;
      "" | single) ;;
      *) die "REDIS=$REDIS: want sentinel (a replica and three Sentinels), cluster (3 masters, 3 replicas) or nothing" ;;
    esac
    pg_up; broker_up; prom_up ;;
  prometheus) prom_up ;; # Prometheus alone (the other servers untouched)
  cluster) redis_cluster_up ;; # the Redis Cluster alone (REDIS=cluster's part of up)
  pg) pg_up ;;           # Postgres alone (FLASH_STACK_PG_PORT, FLASH_STACK_DIR)
  pg-down) pg_down ;;
  down) prom_down || true; broker_down || true; redis_cluster_down || true; redis_ha_down || true; redis_down || true; pg_down || true; say "stopped" ;;
  status) st=0; status || st=$?; redis_ha_status; exit $st ;;
  wipe) "$0" down; rm -rf "$STACK"; say "wiped $STACK" ;;
  *) echo "usage: scripts/stack.sh up|down|status|wipe|prometheus|cluster|pg|pg-down" >&2; exit 2 ;;
esac
