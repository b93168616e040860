// Command gateway is flashgate's claim gateway: the public claim API on FLASH_HTTP_ADDR
// and the admin API, /metrics, /healthz and /readyz on FLASH_ADMIN_ADDR. This file only
// reads flags, builds the clients and packages, runs the listeners and shuts down in
// order; the behaviour lives in gateway/api, gateway/claimer, internal/catalog,
// gateway/admin and gateway/vouchers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/gateway/admin"
	"github.com/flashgate/flashgate/gateway/api"
	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/gateway/console"
	"github.com/flashgate/flashgate/gateway/h5"
	gwpoints "github.com/flashgate/flashgate/gateway/points"
	"github.com/flashgate/flashgate/gateway/push"
	"github.com/flashgate/flashgate/gateway/vouchers"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/evict"
	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/reconcile"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk/decisionlog"
	"github.com/flashgate/flashgate/internal/store"
)

// Defaults of the public listener's limits (docs/INPUT.md lists each limit, its flag
// and what a client sees). A claim is one small request: anything slower or bigger than
// this is a broken or hostile client.
const (
	// publicReadTimeout bounds reading one whole request (line, headers, body) from its
	// first byte; dribbling bytes does not extend it, so a slowloris client is cut off
	// (408) after it.
	publicReadTimeout = 5 * time.Second
	// publicWriteTimeout bounds writing the answer, after the handler returned.
	publicWriteTimeout = 5 * time.Second
	publicIdleTimeout  = 60 * time.Second
	// publicHeaderBytes is the read buffer: the largest request line + headers (431 above).
	publicHeaderBytes = 8 << 10
	// publicMaxConns bounds open connections overall (fasthttp's Concurrency); each costs
	// about two buffers of publicHeaderBytes, so the default caps them near 256 MiB.
	publicMaxConns = 16384
	// publicMaxConnsPerIP bounds open connections per TCP peer: one address can hold at
	// most half the listener. bench opens up to --connections (default 512, used by make
	// bench and make demo; the chaos suite uses up to 4096) to each target from one
	// address; the default leaves twice the largest of those.
	publicMaxConnsPerIP = 8192
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gateway:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

type config struct {
	httpAddr, adminAddr, redisAddr, brokers, pgURL, trustedProxies, logLevel string
	adminToken                                                               string
	adminTokens                                                              []admin.NamedToken
	userTokenSecret                                                          string
	trustBodyUser                                                            bool
	redisAuth                                                                flagenv.RedisAuth
	batchSize, workers, queue, pgMaxConns                                    int
	batchWait, redisTimeout, produceLinger, deliveryTimeout                  time.Duration
	lookupTimeout, shutdownTimeout                                           time.Duration
	readTimeout, writeTimeout, idleTimeout                                   time.Duration
	maxHeaderBytes, maxConns, maxConnsPerIP                                  int
	pointsTZ                                                                 string
	pointsDailyCap                                                           int
	decisions, shortCircuit                                                  bool
	allowEviction                                                            bool
	produceMode                                                              string
	settlerGroup                                                             string
	corsOrigins                                                              string
	origins                                                                  []string
	// faultClaim503 is FLASH_FAULT_CLAIM_503=n (browser tests of the claim page only):
	// the first n accepted claims are answered 503 after they were made.
	faultClaim503 int64
	rejectTTL     time.Duration
	recovery      recovery.Settings
	// faultExitAfterScript is FLASH_FAULT_EXIT_AFTER_SCRIPT=1, for fault tests only and
	// kept out of -help (DESIGN.md "Settings"): the gateway exits at once (status 137,
	// no cleanup) after the claim script accepts a claim and before it is produced.
	faultExitAfterScript bool

	proxies []netip.Prefix
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gateway [flags]\n\nflashgate's claim gateway: the public claim API and the admin API.\nEvery flag has a FLASH_* environment twin; a flag on the command line wins.\nFLASH_ADMIN_TOKENS (name:token,... the admin API's bearer tokens, at least 32 characters each; their names\n"+
			"are the actors in the audit), FLASH_ADMIN_TOKEN (deprecated: one token named \"admin\"), FLASH_USER_TOKEN_SECRET\n"+
			"(the HS256 key of end-user tokens) and FLASH_REDIS_PASSWORD are read from the environment only.\n\nflags:")
		fs.PrintDefaults()
	}
	c := &config{}
	f := flagenv.New(fs)
	f.String(&c.httpAddr, "http-addr", "FLASH_HTTP_ADDR", "127.0.0.1:8080", "listen address of the public claim API")
	f.String(&c.adminAddr, "admin-addr", "FLASH_ADMIN_ADDR", "127.0.0.1:8081", "listen address of the admin API, /metrics, /healthz and /readyz; must be loopback unless FLASH_ADMIN_TOKENS is set; /metrics then needs a token too")
	f.RedisAddr(&c.redisAddr, "Redis address (host:port)")
	f.RedisAuth(&c.redisAuth)
	f.KafkaBrokers(&c.brokers, "Kafka seed brokers, comma-separated")
	f.PGURL(&c.pgURL, "Postgres URL")
	f.String(&c.trustedProxies, "trusted-proxies", "FLASH_TRUSTED_PROXIES", "", "comma-separated CIDRs (or IPs) of proxies whose X-Forwarded-For is believed; default none")
	f.Int(&c.batchSize, "batch-size", "FLASH_BATCH_SIZE", 64, "most claims decided by one claim-script call (1..512)")
	f.Duration(&c.batchWait, "batch-wait", "FLASH_BATCH_WAIT", 0, "how long the first claim of a batch waits for others (0..50ms); 0 takes what is queued, so batches grow with load by themselves")
	f.Int(&c.workers, "workers", "FLASH_WORKERS", 4, "claim-script calls in flight at once (1..256); also sizes the Redis pool")
	f.Int(&c.queue, "queue", "FLASH_QUEUE", 16384, "claims waiting for a worker before the gateway sheds load with 503 (at least -batch-size)")
	f.Duration(&c.redisTimeout, "redis-timeout", "FLASH_REDIS_TIMEOUT", time.Second, "bound of one Redis call on the claim path")
	f.Duration(&c.produceLinger, "produce-linger", "FLASH_PRODUCE_LINGER", 0, "how long a claim record waits for others to share its produce request; adds directly to claim latency")
	f.Duration(&c.deliveryTimeout, "delivery-timeout", "FLASH_DELIVERY_TIMEOUT", 5*time.Second, "longest wait for the broker to acknowledge an accepted claim before it is given back and answered 503")
	f.String(&c.produceMode, "produce-mode", "FLASH_PRODUCE_MODE", claimer.ProduceAsync, "async or sync. A benchmark baseline only: sync makes each claim worker produce its batch's accepted claims and wait for their acknowledgements before taking the next batch; async (the default, for production) lets each client wait on its own produce")
	f.Bool(&c.shortCircuit, "short-circuit", "FLASH_SHORT_CIRCUIT", true, "answer claims for a SKU known sold out, or a campaign clearly not open, without the claim script (idempotency still checked in Redis); false is a benchmark baseline only")
	f.Duration(&c.lookupTimeout, "lookup-timeout", "FLASH_LOOKUP_TIMEOUT", 2*time.Second, "bound of the database call of GET /v1/claims/{id} and redeem")
	f.Int(&c.pgMaxConns, "pg-max-conns", "FLASH_PG_MAX_CONNS", 16, "Postgres pool size (claim lookups, redeems, admin)")
	f.Bool(&c.allowEviction, "allow-eviction", "FLASH_REDIS_ALLOW_EVICTION", false, "start on a Redis whose maxmemory-policy is not noeviction (it may evict stock, budgets and idempotency records); /readyz then reports redis_eviction as degraded")
	f.Bool(&c.decisions, "decisions", "FLASH_DECISIONS", true, "log every claim decision to flash.decisions (best effort, never delays a claim)")
	f.Duration(&c.shutdownTimeout, "shutdown-timeout", "FLASH_SHUTDOWN_TIMEOUT", 20*time.Second, "longest graceful shutdown: draining requests, then flushing the producer")
	c.recovery.Register(f)
	f.Duration(&c.rejectTTL, "reject-ttl", "FLASH_REJECT_TTL", time.Hour, "how long a business rejection (sold_out, user_limit, ...) is remembered for its request_id, so a retry gets the same answer (1s..24h); it is most of Redis's memory in a huge sale (DESIGN.md)")
	f.String(&c.settlerGroup, "settler-group", "FLASH_SETTLER_GROUP", kafkaopt.SettlerGroup, "the settler's Kafka consumer group: a Redis-loss recovery waits for it to settle what is in Kafka before rebuilding")
	f.String(&c.pointsTZ, "points-tz", "FLASH_POINTS_TZ", points.DefaultTZ, "points: the IANA time zone whose calendar days the daily grant caps count (DESIGN.md \"Points\")")
	f.Int(&c.pointsDailyCap, "points-daily-cap", "FLASH_POINTS_DAILY_CAP", points.DefaultDailyCap, "points: most points one user may be granted per calendar day over all tasks (1..1000000000)")
	f.Duration(&c.readTimeout, "read-timeout", "FLASH_READ_TIMEOUT", publicReadTimeout, "public listener: longest time to read one whole request from its first byte (100ms..1m); a slower client gets 408 and is disconnected")
	f.Duration(&c.writeTimeout, "write-timeout", "FLASH_WRITE_TIMEOUT", publicWriteTimeout, "public listener: longest time to write an answer (100ms..1m)")
	f.Duration(&c.idleTimeout, "idle-timeout", "FLASH_IDLE_TIMEOUT", publicIdleTimeout, "public listener: how long a keep-alive connection may wait for its next request (1s..1h)")
	f.Int(&c.maxHeaderBytes, "max-header-bytes", "FLASH_MAX_HEADER_BYTES", publicHeaderBytes, "public listener: largest request line plus headers (4096..65536); larger gets 431")
	f.Int(&c.maxConns, "max-conns", "FLASH_MAX_CONNS", publicMaxConns, "public listener: most open connections overall (1..1048576); one more is answered 503 and closed")
	f.Int(&c.maxConnsPerIP, "max-conns-per-ip", "FLASH_MAX_CONNS_PER_IP", publicMaxConnsPerIP, "public listener: most open connections from one TCP peer address (0 = no limit, else at most -max-conns); one more is answered 429 and closed. Behind a load balancer every connection comes from it: raise or disable")
	f.Bool(&c.trustBodyUser, "trust-body-user", "FLASH_TRUST_BODY_USER", false, "without FLASH_USER_TOKEN_SECRET, believe the user_id a request names even on a non-loopback -http-addr: an authenticating proxy in front vouches for it")
	f.String(&c.corsOrigins, "cors-origins", "FLASH_CORS_ORIGINS", "", "comma-separated origins (https://app.example.com) whose web pages may call the public API from a browser; default none (the claim page at /h5/ is same-origin)")
	f.String(&c.logLevel, "log-level", "FLASH_LOG_LEVEL", "info", "debug, info, warn or error")
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	c.adminToken = f.Secret("FLASH_ADMIN_TOKEN")
	var err error
	if c.adminTokens, err = admin.ParseTokens(f.Secret("FLASH_ADMIN_TOKENS")); err != nil {
		return nil, usageError{err}
	}
	c.userTokenSecret = f.Secret("FLASH_USER_TOKEN_SECRET")
	if c.userTokenSecret != "" && len(c.userTokenSecret) < 32 {
		return nil, usageError{fmt.Errorf("FLASH_USER_TOKEN_SECRET: %d bytes, at least 32 are required", len(c.userTokenSecret))}
	}
	switch v := f.Secret("FLASH_FAULT_EXIT_AFTER_SCRIPT"); v {
	case "", "0":
	case "1":
		c.faultExitAfterScript = true
	default:
		return nil, usageError{fmt.Errorf("FLASH_FAULT_EXIT_AFTER_SCRIPT=%q, want 1 or unset", v)}
	}
	if v := f.Secret("FLASH_FAULT_CLAIM_503"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, usageError{fmt.Errorf("FLASH_FAULT_CLAIM_503=%q, want a count", v)}
		}
		c.faultClaim503 = n
	}
	if c.origins, err = h5.ParseOrigins(c.corsOrigins); err != nil {
		return nil, usageError{err}
	}
	if c.proxies, err = parseProxies(c.trustedProxies); err != nil {
		return nil, usageError{err}
	}
	if len(flagenv.Brokers(c.brokers)) == 0 {
		return nil, usageError{errors.New("-kafka-brokers (FLASH_KAFKA_BROKERS): at least one broker is required")}
	}
	for _, a := range []struct{ name, v string }{{"-http-addr (FLASH_HTTP_ADDR)", c.httpAddr}, {"-admin-addr (FLASH_ADMIN_ADDR)", c.adminAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return nil, usageError{fmt.Errorf("%s %q: %v", a.name, a.v, err)}
		}
	}
	switch {
	case c.deliveryTimeout < 100*time.Millisecond || c.deliveryTimeout > 4*time.Minute:
		return nil, usageError{fmt.Errorf("-delivery-timeout (FLASH_DELIVERY_TIMEOUT)=%s, want 100ms..4m", c.deliveryTimeout)}
	case c.produceLinger < 0 || c.produceLinger > time.Second:
		return nil, usageError{fmt.Errorf("-produce-linger (FLASH_PRODUCE_LINGER)=%s, want 0..1s", c.produceLinger)}
	case c.produceMode != claimer.ProduceAsync && c.produceMode != claimer.ProduceSync:
		return nil, usageError{fmt.Errorf("-produce-mode (FLASH_PRODUCE_MODE)=%q, want async or sync", c.produceMode)}
	case c.lookupTimeout <= 0:
		return nil, usageError{fmt.Errorf("-lookup-timeout (FLASH_LOOKUP_TIMEOUT)=%s, want more than 0", c.lookupTimeout)}
	case c.shutdownTimeout <= 0:
		return nil, usageError{fmt.Errorf("-shutdown-timeout (FLASH_SHUTDOWN_TIMEOUT)=%s, want more than 0", c.shutdownTimeout)}
	case c.pgMaxConns < 1:
		return nil, usageError{fmt.Errorf("-pg-max-conns (FLASH_PG_MAX_CONNS)=%d, want at least 1", c.pgMaxConns)}
	case c.rejectTTL < time.Second || c.rejectTTL > 24*time.Hour:
		return nil, usageError{fmt.Errorf("-reject-ttl (FLASH_REJECT_TTL)=%s, want 1s..24h", c.rejectTTL)}
	case strings.TrimSpace(c.settlerGroup) == "":
		return nil, usageError{errors.New("-settler-group (FLASH_SETTLER_GROUP): required")}
	}
	if err := c.recovery.Validate(); err != nil {
		return nil, usageError{err}
	}
	if err := c.checkListenerLimits(); err != nil {
		return nil, usageError{err}
	}
	// Without user tokens the gateway believes whatever user_id a request names: fine on
	// a developer's loopback, an open door anywhere else unless a proxy authenticates.
	if c.userTokenSecret == "" && !c.trustBodyUser && !admin.Loopback(c.httpAddr) {
		return nil, usageError{fmt.Errorf("-http-addr (FLASH_HTTP_ADDR) %q is not loopback and FLASH_USER_TOKEN_SECRET is not set: "+
			"anyone could claim and redeem as any user. Set the secret, or FLASH_TRUST_BODY_USER=true when an authenticating proxy stands in front", c.httpAddr)}
	}
	return c, nil
}

// checkListenerLimits validates the public listener's limits; each error names its flag.
func (c *config) checkListenerLimits() error {
	switch {
	case c.readTimeout < 100*time.Millisecond || c.readTimeout > time.Minute:
		return fmt.Errorf("-read-timeout (FLASH_READ_TIMEOUT)=%s, want 100ms..1m", c.readTimeout)
	case c.writeTimeout < 100*time.Millisecond || c.writeTimeout > time.Minute:
		return fmt.Errorf("-write-timeout (FLASH_WRITE_TIMEOUT)=%s, want 100ms..1m", c.writeTimeout)
	case c.idleTimeout < time.Second || c.idleTimeout > time.Hour:
		return fmt.Errorf("-idle-timeout (FLASH_IDLE_TIMEOUT)=%s, want 1s..1h", c.idleTimeout)
	case c.maxHeaderBytes < 4096 || c.maxHeaderBytes > 65536:
		return fmt.Errorf("-max-header-bytes (FLASH_MAX_HEADER_BYTES)=%d, want 4096..65536", c.maxHeaderBytes)
	case c.maxConns < 1 || c.maxConns > 1<<20:
		return fmt.Errorf("-max-conns (FLASH_MAX_CONNS)=%d, want 1..1048576", c.maxConns)
	case c.maxConnsPerIP < 0 || c.maxConnsPerIP > c.maxConns:
		return fmt.Errorf("-max-conns-per-ip (FLASH_MAX_CONNS_PER_IP)=%d, want 0 (no limit) up to -max-conns (%d)", c.maxConnsPerIP, c.maxConns)
	}
	return nil
}

// parseProxies reads FLASH_TRUSTED_PROXIES: CIDRs, or bare IPs meaning that one host.
func parseProxies(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("-trusted-proxies (FLASH_TRUSTED_PROXIES): entry %q is not a CIDR like 10.0.0.0/8", e)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			return nil, fmt.Errorf("-trusted-proxies (FLASH_TRUSTED_PROXIES): entry %q is not a CIDR like 10.0.0.0/8 or an IP", e)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("-log-level (FLASH_LOG_LEVEL) %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// run is the whole process between flags and exit: it returns when ctx is cancelled
// (SIGTERM/SIGINT) and the shutdown is done, or when a listener fails.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.logLevel, stderr)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Postgres: the record of campaigns and settled claims. As the schema owner the
	// gateway migrates (a fresh database works on first start; golang-migrate's lock makes
	// concurrent starts safe); as its own role it only checks the version (store.Prepare).
	startCtx, cancelStart := context.WithTimeout(ctx, 30*time.Second)
	defer cancelStart()
	pg, err := store.Open(startCtx, cfg.pgURL, int32(cfg.pgMaxConns))
	if err != nil {
		return fmt.Errorf("postgres (-pg-url): %w", err)
	}
	defer pg.Close()
	if err := store.Prepare(startCtx, pg); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}

	// Redis: one connection per in-flight script call, plus room for durable marks,
	// voids, pending lookups, readiness and the admin API.
	rdb := cfg.redisAuth.NewClient(&redis.Options{
		Addr:                  cfg.redisAddr,
		PoolSize:              cfg.workers*2 + 8,
		MinIdleConns:          cfg.workers,
		DialTimeout:           2 * time.Second,
		ReadTimeout:           cfg.redisTimeout,
		WriteTimeout:          cfg.redisTimeout,
		PoolTimeout:           cfg.redisTimeout,
		ContextTimeoutEnabled: true,
	})
	defer rdb.Close()
	if err := rdb.Ping(startCtx).Err(); err != nil {
		return fmt.Errorf("redis %s (-redis-addr): %w", cfg.redisAddr, err)
	}
	if err := evict.Check(startCtx, rdb); err != nil {
		if !cfg.allowEviction || !errors.Is(err, evict.ErrEvicting) {
			return fmt.Errorf("redis %s (-redis-addr): %w", cfg.redisAddr, err)
		}
		log.Warn("redis may evict claim state; starting anyway (-allow-eviction)", "err", err)
	}

	brokers := flagenv.Brokers(cfg.brokers)
	kcl, err := kgo.NewClient(kafkaopt.Producer(brokers, cfg.produceLinger, cfg.deliveryTimeout)...)
	if err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	defer kcl.Close()

	var decisions *decisionlog.Log
	ccfg := claimer.Config{
		MaxBatch:     cfg.batchSize,
		BatchWait:    cfg.batchWait,
		Workers:      cfg.workers,
		QueueSize:    cfg.queue,
		RedisTimeout: cfg.redisTimeout,
		// A little above the producer's delivery timeout: the claimer's own bound on the
		// wait for an ack, for the cases franz-go cannot time out safely (see claimer).
		AckTimeout:  cfg.deliveryTimeout + cfg.deliveryTimeout/5 + 100*time.Millisecond,
		AcceptGrace: cfg.recovery.AcceptGrace,
		RejectTTL:   cfg.rejectTTL,
		// Benchmark baselines (README): both default to the production behaviour.
		ProduceMode:         cfg.produceMode,
		DisableShortCircuit: !cfg.shortCircuit,
	}
	// A NOT_WARM answer (fenced, or this Redis is not the run the campaign was rebuilt
	// on) starts a recovery pass now instead of at the next interval.
	recKick := recovery.NewKick()
	ccfg.OnNotWarm = func(string) { recKick.Now() }
	if cfg.faultExitAfterScript {
		log.Warn("FLASH_FAULT_EXIT_AFTER_SCRIPT=1: this gateway dies after its first accepted claim (fault tests only)")
		ccfg.BeforeProduce = func() { os.Exit(137) } // no deferred cleanup: like kill -9
	}
	if cfg.decisions {
		decisions, err = decisionlog.New(decisionlog.Config{Brokers: brokers}, decisionlog.NewMetrics(reg), log)
		if err != nil {
			return err
		}
		ccfg.Decisions = decisions
		defer func() {
			if decisions != nil { // not closed by the shutdown below: an early return
				c, cancel := context.WithTimeout(context.Background(), time.Second)
				decisions.Close(c)
				cancel()
			}
		}()
	}
	pointsZone, err := time.LoadLocation(cfg.pointsTZ)
	if err != nil {
		return usageError{fmt.Errorf("-points-tz (FLASH_POINTS_TZ)=%q: %v", cfg.pointsTZ, err)}
	}
	pts, err := points.New(pg, rdb, points.Config{Zone: pointsZone, DailyCap: int64(cfg.pointsDailyCap), Registerer: reg})
	if err != nil {
		return usageError{err}
	}
	// A points_item claim holds its price in the user's slot around its decision.
	ccfg.Points = pts
	claims, err := claimer.New(ccfg, rdb, kcl, claimer.NewMetrics(reg), log)
	if err != nil {
		return usageError{err}
	}
	defer claims.Close() // idempotent; the shutdown below closes it in order
	// Campaign changes made through this gateway's admin API drop its own short-circuit
	// conclusions before the call returns; other gateways hear it on fg:changes.
	cat := catalog.New(pg, rdb)
	cat.OnChange(claims.Forget)
	vs, err := vouchers.New(pg)
	if err != nil {
		return err
	}
	acfg := api.Config{TrustedProxies: cfg.proxies, LookupTimeout: cfg.lookupTimeout}
	if cfg.userTokenSecret != "" {
		if acfg.Auth, err = api.NewAuth([]byte(cfg.userTokenSecret)); err != nil {
			return usageError{err}
		}
	}
	if acfg.Blocker, err = vouchers.NewBlocks(rdb); err != nil {
		return err
	}
	if acfg.PendingMine, err = vouchers.NewPendingScan(rdb, claims); err != nil {
		return err
	}
	// GET /v1/claims/{draw_id} of a lottery draw that won nothing (DESIGN.md "Lottery").
	if acfg.Draws, err = vouchers.NewDraws(pg, rdb); err != nil {
		return err
	}
	ptsHTTP := gwpoints.New(pts, pg, log.With("component", "points"))
	// Push to tiers (DESIGN.md "Push"): the runner resumes any push a crashed gateway
	// left running, once its lease ran out.
	pusher, err := push.New(push.Config{RedisTimeout: cfg.redisTimeout, AcceptGrace: cfg.recovery.AcceptGrace,
		RejectTTL: cfg.rejectTTL}, pg, rdb, kcl, log.With("component", "push"))
	if err != nil {
		return usageError{err}
	}
	go pusher.Run(ctx)
	pushHTTP := push.NewHTTP(pusher, pg, log.With("component", "push"))
	acfg.Points = ptsHTTP.Public
	apiMetrics := api.NewMetrics(reg)
	pub, err := api.New(acfg, claims, vs, claims, apiMetrics, log)
	if err != nil {
		return err
	}
	if cfg.faultClaim503 > 0 {
		log.Warn("FLASH_FAULT_CLAIM_503 set: accepted claims are answered 503 (tests only)", "count", cfg.faultClaim503)
	}
	page, err := h5.New(h5.Config{CORSOrigins: cfg.origins, FaultClaim503: cfg.faultClaim503}, pg, apiMetrics, log)
	if err != nil {
		return err
	}
	// Partner claims (X-Partner-Key): the key index is loaded now and every
	// catalog.PartnerRefresh; a Postgres outage keeps the last one.
	pub.SetPartners(cat)
	go cat.WatchPartners(ctx, log)
	// Redis-loss recovery runs in the gateway too, so a restarted Redis is fenced and
	// rebuilt even when no settler is up; the lock per business line makes one process
	// do each rebuild. It waits for the settler group before rebuilding.
	rec, err := recovery.New(cfg.recovery.Config(), rdb, pg,
		&recovery.KafkaCatchUp{Client: kcl, Group: cfg.settlerGroup, Topic: kafkaopt.ClaimsTopic},
		log.With("component", "recovery"), reg)
	if err != nil {
		return usageError{err}
	}
	// The admin API's reconciler checks; its repair can rebuild counters (Recoverer) but
	// not re-publish orphans (no relay here: the settler's relay does that on its own).
	recon, err := reconcile.New(reconcile.Config{AcceptGrace: cfg.recovery.AcceptGrace},
		reconcile.Deps{Redis: rdb, PG: pg, Recoverer: rec, Log: log.With("component", "reconcile"), Registerer: reg})
	if err != nil {
		return err
	}
	con, err := console.New(console.Deps{PG: pg, Catalog: cat, Reconciler: recon, Gatherer: reg, Brokers: brokers, Log: log})
	if err != nil {
		return err
	}
	adm, err := admin.New(admin.Config{
		Console:    con.Handler,
		Routes:     []func(*fasthttp.RequestCtx, []string) bool{page.AdminRoute, con.AdminRoute, ptsHTTP.AdminRoute, pushHTTP.AdminRoute},
		Addr:       cfg.adminAddr,
		Token:      cfg.adminToken,
		Tokens:     cfg.adminTokens,
		Audit:      pg,
		Gatherer:   reg,
		Reconciler: recon,
		Checks: []admin.Check{
			{Name: "redis", Ping: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
			// A policy that could evict claim state: 503 unless the operator accepted it at
			// start (-allow-eviction), then degraded (RELIABILITY.md "Redis memory").
			{Name: "redis_eviction", Ping: func(ctx context.Context) error { return evict.Check(ctx, rdb) }, Degrades: cfg.allowEviction},
			{Name: "kafka", Ping: kcl.Ping},
			{Name: "postgres", Ping: pg.Ping, Degrades: true},
		},
	}, cat, log)
	if err != nil {
		return usageError{err}
	}

	fastLog := fasthttpLogger{log}
	publicSrv := &fasthttp.Server{
		Name:               "flashgate",
		Handler:            page.Public(pub.Handler),
		ErrorHandler:       api.ErrorHandler,
		MaxRequestBodySize: api.MaxBodyBytes, // declared, undeclared and chunked: 413
		ReadBufferSize:     cfg.maxHeaderBytes,
		ReadTimeout:        cfg.readTimeout,
		WriteTimeout:       cfg.writeTimeout,
		IdleTimeout:        cfg.idleTimeout,
		// The connection limits are limitListener's (connlimit.go), which refuses with
		// the contract's JSON; fasthttp's own, which would answer in plain text, is only
		// a backstop above it (a worker is released a moment after its connection's
		// place is, so at exactly -max-conns fasthttp could otherwise refuse first).
		Concurrency:                  2 * cfg.maxConns,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		Logger:                       fastLog,
	}
	adminSrv := &fasthttp.Server{
		Name:               "flashgate-admin",
		Handler:            adm.Handler,
		MaxRequestBodySize: admin.MaxBodyBytes,
		ReadTimeout:        60 * time.Second,
		WriteTimeout:       60 * time.Second,
		IdleTimeout:        publicIdleTimeout,
		Logger:             fastLog,
	}

	// Bind both before serving either, so a taken port is an error at start-up.
	pubLn, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return fmt.Errorf("listen -http-addr (FLASH_HTTP_ADDR): %w", err)
	}
	admLn, err := net.Listen("tcp", cfg.adminAddr)
	if err != nil {
		pubLn.Close()
		return fmt.Errorf("listen -admin-addr (FLASH_ADMIN_ADDR): %w", err)
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- publicSrv.Serve(newLimitListener(pubLn, cfg.maxConns, cfg.maxConnsPerIP)) }()
	go func() { serveErr <- adminSrv.Serve(admLn) }()
	recCtx, stopRecovery := context.WithCancel(context.Background())
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.RunWithKicks(recCtx, recKick) }()
	defer func() { stopRecovery(); <-recDone }() // an early return below still waits for it
	if cfg.adminToken != "" {
		log.Warn("FLASH_ADMIN_TOKEN is deprecated: use FLASH_ADMIN_TOKENS=name:token (its changes are audited as \"admin\")")
	}
	if cfg.userTokenSecret == "" {
		log.Warn("no FLASH_USER_TOKEN_SECRET: the user_id a request names is believed", "trust_body_user", cfg.trustBodyUser)
	}
	log.Info("gateway listening", "http", pubLn.Addr().String(), "admin", admLn.Addr().String(),
		"admin_tokens", len(cfg.adminTokens)+min(len(cfg.adminToken), 1), "user_tokens", cfg.userTokenSecret != "", "trusted_proxies", len(cfg.proxies),
		"redis", cfg.redisAddr, "kafka", cfg.brokers, "workers", cfg.workers, "batch_size", cfg.batchSize,
		"produce_mode", cfg.produceMode, "short_circuit", cfg.shortCircuit)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-serveErr:
		log.Error("listener failed; shutting down", "err", runErr)
	}

	// Order matters (STYLE "thin main"): stop accepting and drain every handler, so no
	// claim is mid-flight; then stop the claimer, whose last batches finish; then flush
	// the producer, so every record a client heard 200 for has left; then close clients.
	adm.SetDraining()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := publicSrv.ShutdownWithContext(sctx); err != nil {
		log.Warn("public listener did not drain in time", "err", err)
	}
	claims.Close()
	// A rebuild in progress is abandoned (its business line stays fenced; the next
	// recoverer, here or in a settler, finishes it) before the clients it uses close.
	stopRecovery()
	<-recDone
	if err := kcl.Flush(sctx); err != nil {
		log.Warn("claims producer not flushed in time", "err", err)
	}
	if decisions != nil {
		decisions.Close(sctx)
		decisions = nil
	}
	// The admin listener goes last: /metrics and /readyz answer while the rest drains.
	if err := adminSrv.ShutdownWithContext(sctx); err != nil {
		log.Warn("admin listener did not drain in time", "err", err)
	}
	log.Info("gateway stopped")
	return runErr
}

// fasthttpLogger sends fasthttp's own messages (connection errors, mostly caused by
// clients) to slog at debug: nothing per request at info.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
	}
}
