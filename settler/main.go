// Command settler moves accepted claims from Kafka (flash.claims) into Postgres, exactly
// once in effect, and serves its metrics and health on FLASH_SETTLER_ADDR. Beside the
// consume loop (settler/settle) it runs the outbox relay (settler/relay), Redis-loss
// recovery (internal/recovery), voucher expiry (settler/expire) and reconciliation
// (internal/reconcile). This file only reads flags, wires dependencies, and shuts down in
// order: stop polling and the background loops, finish and commit the batch in hand,
// leave the group, flush the relay's producer, close the clients.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/delivery"
	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/evict"
	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/reconcile"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/store"
	"github.com/flashgate/flashgate/settler/expire"
	"github.com/flashgate/flashgate/settler/relay"
	"github.com/flashgate/flashgate/settler/settle"
)

// background is the configuration of the loops that run beside the consume loop.
type background struct {
	relayMinAge, relayInterval            time.Duration
	expireInterval                        time.Duration
	expireBatch                           int
	eventsInterval                        time.Duration
	deliveryInterval, deliveryTimeout     time.Duration
	deliveryAttempts                      int
	allowEviction                         bool
	reconcileInterval                     time.Duration
	reconcileRepairAfter                  int
	recovery                              recovery.Settings
	campaigns                             []string // expiry and reconciliation only these (empty: all)
	pointsHoldsInterval, pointsHoldsGrace time.Duration
	pointsExpireInterval                  time.Duration
}

// validate checks what the components cannot (0 meaning "off") and reports a bad value
// by its flag; the components check the rest in New.
func (b *background) validate() error {
	switch {
	case b.relayMinAge < time.Second:
		return fmt.Errorf("-relay-min-age (FLASH_RELAY_MIN_AGE)=%s, want at least 1s (above the gateway's -delivery-timeout in production)", b.relayMinAge)
	case b.relayInterval < 10*time.Millisecond:
		return fmt.Errorf("-relay-interval (FLASH_RELAY_INTERVAL)=%s, want at least 10ms", b.relayInterval)
	case b.expireInterval != 0 && b.expireInterval < 10*time.Millisecond:
		return fmt.Errorf("-expire-interval (FLASH_EXPIRE_INTERVAL)=%s, want 0 (off) or at least 10ms", b.expireInterval)
	case b.pointsHoldsInterval != 0 && (b.pointsHoldsInterval < 10*time.Millisecond || b.pointsHoldsInterval > time.Hour):
		return fmt.Errorf("-points-holds-interval (FLASH_POINTS_HOLDS_INTERVAL)=%s, want 0 (off) or 10ms..1h", b.pointsHoldsInterval)
	case b.pointsExpireInterval != 0 && (b.pointsExpireInterval < 10*time.Millisecond || b.pointsExpireInterval > time.Hour):
		return fmt.Errorf("-points-expire-interval (FLASH_POINTS_EXPIRE_INTERVAL)=%s, want 0 (off) or 10ms..1h", b.pointsExpireInterval)
	case b.pointsHoldsGrace < time.Second || b.pointsHoldsGrace > 24*time.Hour:
		return fmt.Errorf("-points-holds-grace (FLASH_POINTS_HOLDS_GRACE)=%s, want 1s..24h (above the gateway's longest claim and -relay-min-age)", b.pointsHoldsGrace)
	case b.expireBatch < 1 || b.expireBatch > 10_000:
		return fmt.Errorf("-expire-batch (FLASH_EXPIRE_BATCH)=%d, want 1..10000", b.expireBatch)
	case b.reconcileInterval != 0 && b.reconcileInterval < 10*time.Millisecond:
		return fmt.Errorf("-reconcile-interval (FLASH_RECONCILE_INTERVAL)=%s, want 0 (off) or at least 10ms", b.reconcileInterval)
	case b.reconcileRepairAfter < 0:
		return fmt.Errorf("-reconcile-repair-after (FLASH_RECONCILE_REPAIR_AFTER)=%d, want 0 (report only) or more", b.reconcileRepairAfter)
	}
	return b.recovery.Validate()
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	var (
		redisAddr, brokers, pgURL, addr, logLevel string
		campaigns                                 string
		redisAuth                                 flagenv.RedisAuth
		cfg                                       settle.Config
		bg                                        background
	)
	fs := flag.NewFlagSet("settler", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: settler [flags]\n\nConsumes flash.claims into Postgres (claims + budget ledger), committing offsets only after Postgres commits.\n"+
			"Beside it: the outbox relay, Redis-loss recovery, voucher expiry and reconciliation.\n\n")
		fs.PrintDefaults()
	}
	f := flagenv.New(fs)
	f.RedisAddr(&redisAddr, "Redis address (host:port)")
	f.RedisAuth(&redisAuth)
	f.KafkaBrokers(&brokers, "Kafka seed brokers, comma-separated")
	f.PGURL(&pgURL, "Postgres URL")
	// The settler's names before the connection flags had one name in every binary.
	f.Deprecated("redis", flagenv.RedisAddrFlag)
	f.Deprecated("brokers", flagenv.KafkaBrokersFlag)
	f.Deprecated("pg", flagenv.PGURLFlag)
	f.String(&addr, "addr", "FLASH_SETTLER_ADDR", "127.0.0.1:8082", "listen address of /metrics, /healthz and /readyz")
	f.String(&cfg.Topic, "topic", "FLASH_SETTLER_TOPIC", kafkaopt.ClaimsTopic, "topic of accepted claims (the gateway produces to "+kafkaopt.ClaimsTopic+"; another name isolates a test or staging settler)")
	f.String(&cfg.RejectTopic, "reject-topic", "FLASH_SETTLER_REJECT_TOPIC", "", "topic where records that are not storable claims of a known campaign are set aside, with why (default: the -topic name + \".rejected\", "+kafkaopt.ClaimsRejectedTopic+")")
	f.String(&cfg.Group, "group", "FLASH_SETTLER_GROUP", kafkaopt.SettlerGroup, "Kafka consumer group; a group with no committed offsets starts at the oldest record")
	f.Duration(&cfg.SessionTimeout, "session-timeout", "FLASH_SETTLER_SESSION_TIMEOUT", settle.DefaultSessionTimeout, "how long the group waits for a silent (killed) member before its partitions move to another settler")
	f.Int(&cfg.MaxBatch, "batch", "FLASH_SETTLER_BATCH", settle.DefaultMaxBatch, "most records settled per batch (one Postgres transaction, one offset commit)")
	f.Int(&cfg.Writers, "writers", "FLASH_SETTLER_WRITERS", settle.DefaultWriters, "batches of one poll settled concurrently, each its own Postgres transaction (a poll takes up to -batch × -writers records; its offsets are committed when all of them are in)")
	f.Duration(&cfg.PollWait, "poll-wait", "FLASH_SETTLER_POLL_WAIT", settle.DefaultPollWait, "how long a fetch waits for records before the settler settles what it has")
	f.Int(&cfg.FetchMinBytes, "fetch-min-bytes", "FLASH_SETTLER_FETCH_MIN_BYTES", settle.DefaultFetchMinBytes, "bytes of records a fetch gathers before the broker answers it early (1..1048576); short of it the fetch is answered after -poll-wait, which stays the lag bound. Larger means fewer, fuller batches (less CPU per claim) at up to -poll-wait more lag")
	f.Duration(&cfg.RetryMin, "retry-min", "FLASH_SETTLER_RETRY_MIN", settle.DefaultRetryMin, "first backoff after a Redis or Postgres failure (doubles per attempt)")
	f.Duration(&cfg.RetryMax, "retry-max", "FLASH_SETTLER_RETRY_MAX", settle.DefaultRetryMax, "longest backoff between retries of a failed batch")
	f.Duration(&cfg.RedisTimeout, "redis-timeout", "FLASH_SETTLER_REDIS_TIMEOUT", settle.DefaultRedisTimeout, "timeout of one Redis call")
	f.Duration(&cfg.PGTimeout, "pg-timeout", "FLASH_SETTLER_PG_TIMEOUT", settle.DefaultPGTimeout, "timeout of one Postgres transaction")
	f.Duration(&cfg.DrainTimeout, "drain-timeout", "FLASH_SETTLER_DRAIN_TIMEOUT", settle.DefaultDrainTimeout, "on SIGTERM, how long the batch in hand may take to settle and commit")
	f.Duration(&bg.relayMinAge, "relay-min-age", "FLASH_RELAY_MIN_AGE", 15*time.Second, "outbox relay: age past which an accepted claim not yet in Postgres is re-published to Kafka; keep it above the gateway's -delivery-timeout")
	f.Duration(&bg.relayInterval, "relay-interval", "FLASH_RELAY_INTERVAL", time.Second, "outbox relay: period of its pass over every campaign's outbox")
	f.Duration(&bg.expireInterval, "expire-interval", "FLASH_EXPIRE_INTERVAL", 5*time.Second, "voucher expiry: period of its pass (expired vouchers' value goes back to the budgets); 0 turns expiry off in this settler")
	f.Duration(&bg.eventsInterval, "events-interval", "FLASH_EVENTS_INTERVAL", 500*time.Millisecond, "flash.events publisher: pause between passes over the events outbox when it is empty; 0 turns publishing off in this settler (the rows wait for another)")
	f.Duration(&bg.deliveryInterval, "delivery-interval", "FLASH_DELIVERY_INTERVAL", 500*time.Millisecond, "prize delivery: pause between passes over due webhook deliveries when none is due; 0 turns delivery off in this settler")
	f.Duration(&bg.deliveryTimeout, "delivery-call-timeout", "FLASH_DELIVERY_CALL_TIMEOUT", 5*time.Second, "prize delivery: timeout of one webhook call (10ms..1m)")
	f.Int(&bg.deliveryAttempts, "delivery-attempts", "FLASH_DELIVERY_ATTEMPTS", 8, "prize delivery: attempts before a delivery is dead-lettered (state failed; an admin retry resumes it)")
	f.Duration(&bg.pointsHoldsInterval, "points-holds-interval", "FLASH_POINTS_HOLDS_INTERVAL", points.DefaultHoldsInterval, "points: period of the sweep of orphaned points holds (a points_item claim's hold older than -points-holds-grace is spent if its claim is a row, given back if it was voided, rejected or never made); 0 turns the sweep off in this settler")
	f.Duration(&bg.pointsExpireInterval, "points-expire-interval", "FLASH_POINTS_EXPIRE_INTERVAL", 5*time.Second, "points: period of the expiry pass (lots past their expiry, soonest first: the hot balance, the ledger and a points_expired event); 0 turns points expiry off in this settler")
	f.Duration(&bg.pointsHoldsGrace, "points-holds-grace", "FLASH_POINTS_HOLDS_GRACE", points.DefaultHoldsGrace, "points: age of a hold's last attempt before the sweep resolves it (1s..24h; above the gateway's longest claim and -relay-min-age)")
	f.Int(&bg.expireBatch, "expire-batch", "FLASH_EXPIRE_BATCH", 500, "voucher expiry: claims expired per Postgres transaction")
	f.Duration(&bg.reconcileInterval, "reconcile-interval", "FLASH_RECONCILE_INTERVAL", 10*time.Second, "reconciliation: period of the check of every live campaign's Redis counters against Postgres; 0 turns it off in this settler")
	f.Int(&bg.reconcileRepairAfter, "reconcile-repair-after", "FLASH_RECONCILE_REPAIR_AFTER", 3, "reconciliation: repair a drift seen unchanged in this many consecutive checks (0 = report only)")
	bg.recovery.Register(f)
	f.String(&campaigns, "campaigns", "FLASH_SETTLER_CAMPAIGNS", "", "voucher expiry and reconciliation: only these campaigns (comma-separated); default every campaign. For a test or staging settler on a shared stack (the relay and the consume loop still serve every campaign of its topic)")
	f.Bool(&bg.allowEviction, "allow-eviction", "FLASH_REDIS_ALLOW_EVICTION", false, "start on a Redis whose maxmemory-policy is not noeviction (it may evict stock, budgets and idempotency records); /readyz then reports redis_eviction as degraded")
	f.String(&logLevel, "log-level", "FLASH_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "settler:", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "settler: -log-level %q: want debug, info, warn or error\n", logLevel)
		return 2
	}
	cfg.Brokers = flagenv.Brokers(brokers)
	bg.campaigns = flagenv.List(campaigns)
	if err := bg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "settler:", err)
		return 2
	}
	if cfg.FetchMinBytes == 0 {
		// settle.Config reads 0 as "the default"; typed on the command line it would
		// silently mean 256 KiB, not "no minimum".
		fmt.Fprintf(os.Stderr, "settler: -fetch-min-bytes (FLASH_SETTLER_FETCH_MIN_BYTES): must be 1..1048576 (1 = answer as soon as any record exists), got 0\n")
		return 2
	}
	if err := cfg.Validate(); err != nil {
		var ce *settle.ConfigError
		if errors.As(err, &ce) {
			name, _, _ := strings.Cut(ce.Field, "[")
			fmt.Fprintf(os.Stderr, "settler: %s: %s\n", flagOf[name], ce.Msg)
		} else {
			fmt.Fprintln(os.Stderr, "settler:", err)
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := serve(cfg, bg, redisAddr, redisAuth, pgURL, addr, log); err != nil {
		log.Error("settler stopped", "err", err)
		return 1
	}
	return 0
}

// flagOf names the flag (and its environment twin) behind each settle.Config field, so
// a bad value is reported as the user typed it.
var flagOf = map[string]string{
	"Brokers":        "-kafka-brokers (FLASH_KAFKA_BROKERS)",
	"Group":          "-group (FLASH_SETTLER_GROUP)",
	"RejectTopic":    "-reject-topic (FLASH_SETTLER_REJECT_TOPIC)",
	"MaxBatch":       "-batch (FLASH_SETTLER_BATCH)",
	"Writers":        "-writers (FLASH_SETTLER_WRITERS)",
	"SessionTimeout": "-session-timeout (FLASH_SETTLER_SESSION_TIMEOUT)",
	"PollWait":       "-poll-wait (FLASH_SETTLER_POLL_WAIT)",
	"FetchMinBytes":  "-fetch-min-bytes (FLASH_SETTLER_FETCH_MIN_BYTES)",
	"RetryMin":       "-retry-min (FLASH_SETTLER_RETRY_MIN)",
	"RetryMax":       "-retry-max (FLASH_SETTLER_RETRY_MAX)",
	"RedisTimeout":   "-redis-timeout (FLASH_SETTLER_REDIS_TIMEOUT)",
	"PGTimeout":      "-pg-timeout (FLASH_SETTLER_PG_TIMEOUT)",
	"DrainTimeout":   "-drain-timeout (FLASH_SETTLER_DRAIN_TIMEOUT)",
}

func serve(cfg settle.Config, bg background, redisAddr string, redisAuth flagenv.RedisAuth, pgURL, addr string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	defer ln.Close()

	// One connection per writer, plus the relay, expiry, reconciliation and recovery.
	pg, err := store.Open(ctx, pgURL, int32(cfg.Writers+6))
	if err != nil {
		return err
	}
	defer pg.Close()
	if err := store.Prepare(ctx, pg); err != nil {
		return err
	}
	rdb := redisAuth.NewClient(&redis.Options{Addr: redisAddr, DialTimeout: 2 * time.Second,
		ReadTimeout: cfg.RedisTimeout, WriteTimeout: cfg.RedisTimeout})
	defer rdb.Close()
	if err := evict.Check(ctx, rdb); err != nil {
		if !bg.allowEviction || !errors.Is(err, evict.ErrEvicting) {
			return fmt.Errorf("redis %s (-redis): %w", redisAddr, err)
		}
		log.Warn("redis may evict claim state; starting anyway (-allow-eviction)", "err", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Points: the held points of each written points_item claim are spent after its
	// batch commits; the sweep (below) is the backstop and resolves orphaned holds.
	ptsSvc, err := points.New(pg, rdb, points.Config{})
	if err != nil {
		return err
	}
	holds, err := points.NewHolds(ptsSvc, points.HoldsConfig{Grace: bg.pointsHoldsGrace,
		Interval: max(bg.pointsHoldsInterval, 10*time.Millisecond), Registerer: reg}, log.With("component", "points"))
	if err != nil {
		return err
	}
	cfg.Points = holds
	s, err := settle.New(cfg, rdb, pg, settle.NewMetrics(reg), log)
	if err != nil {
		return err
	}
	defer s.Close() // idempotent; the shutdown below closes it in order

	// The relay's producer doubles as the recoverer's admin client (offsets of the
	// settler group). Its own short linger: a re-publish is not on any client's path.
	producer, err := kgo.NewClient(kafkaopt.Producer(cfg.Brokers, time.Millisecond, 10*time.Second)...)
	if err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	defer producer.Close()
	rl, err := relay.New(relay.Config{MinAge: bg.relayMinAge, Interval: bg.relayInterval, Topic: cfg.Topic},
		rdb, pg, producer, log.With("component", "relay"), reg)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	rec, err := recovery.New(bg.recovery.Config(), rdb, pg,
		&recovery.KafkaCatchUp{Client: producer, Group: cfg.Group, Topic: cfg.Topic}, log.With("component", "recovery"), reg)
	if err != nil {
		return err
	}
	type loop struct {
		name string
		run  func(context.Context) error
	}
	loops := []loop{{"relay", rl.Run}, {"recovery", rec.Run}}
	if bg.expireInterval > 0 {
		x, err := expire.New(expire.Config{Interval: bg.expireInterval, Batch: bg.expireBatch, Campaigns: bg.campaigns}, rdb, pg, log.With("component", "expire"), reg)
		if err != nil {
			return err
		}
		loops = append(loops, loop{"expire", x.Run})
	}
	if bg.pointsHoldsInterval > 0 {
		loops = append(loops, loop{"points-holds", holds.Run})
	}
	if bg.pointsExpireInterval > 0 {
		px, err := points.NewExpirer(ptsSvc, points.ExpireConfig{Interval: bg.pointsExpireInterval, Registerer: reg}, log.With("component", "points-expire"))
		if err != nil {
			return err
		}
		loops = append(loops, loop{"points-expire", px.Run})
	}
	if bg.eventsInterval > 0 {
		pub, err := events.NewPublisher(events.Config{Interval: bg.eventsInterval}, pg, producer, log.With("component", "events"), reg)
		if err != nil {
			return fmt.Errorf("-events-interval (FLASH_EVENTS_INTERVAL): %w", err)
		}
		loops = append(loops, loop{"events", pub.Run})
	}
	if bg.deliveryInterval > 0 {
		dl, err := delivery.New(delivery.Config{Interval: bg.deliveryInterval, CallTimeout: bg.deliveryTimeout,
			MaxAttempts: bg.deliveryAttempts}, pg, nil, delivery.NewMetrics(reg), log.With("component", "delivery"))
		if err != nil {
			return fmt.Errorf("-delivery-* (FLASH_DELIVERY_*): %w", err)
		}
		loops = append(loops, loop{"delivery", dl.Run})
	}
	if bg.reconcileInterval > 0 {
		rc, err := reconcile.New(reconcile.Config{Interval: bg.reconcileInterval, OrphanAge: bg.relayMinAge,
			RepairAfter: bg.reconcileRepairAfter, AcceptGrace: bg.recovery.AcceptGrace, Campaigns: bg.campaigns},
			reconcile.Deps{Redis: rdb, PG: pg, Relay: rl, Recoverer: rec, Log: log.With("component", "reconcile"), Registerer: reg})
		if err != nil {
			return err
		}
		loops = append(loops, loop{"reconcile", rc.Run})
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		err := s.Ready(rctx)
		// A policy that could evict claim state: 503 unless accepted at start
		// (-allow-eviction), then "degraded" (RELIABILITY.md "Redis memory").
		everr := evict.Check(rctx, rdb)
		if err == nil && everr != nil && !bg.allowEviction {
			err = fmt.Errorf("redis_eviction: %w", everr)
		}
		if err != nil {
			http.Error(w, "not ready: "+strings.ReplaceAll(err.Error(), "\n", " "), http.StatusServiceUnavailable)
			return
		}
		if everr != nil {
			w.Write([]byte("ready, degraded: redis_eviction: " + everr.Error() + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()

	// The background loops share the consume loop's lifetime: each returns when ctx
	// ends, and all are waited for before the clients they use are closed.
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Go(func() {
			if err := l.run(ctx); err != nil && ctx.Err() == nil {
				log.Error("background loop stopped", "loop", l.name, "err", err)
			}
		})
	}
	names := make([]string, len(loops))
	for i, l := range loops {
		names[i] = l.name
	}
	log.Info("settler running", "addr", ln.Addr().String(), "group", cfg.Group, "brokers", cfg.Brokers,
		"background", strings.Join(names, ","))

	runErr := s.Run(ctx)
	// Run returns on SIGTERM or on a fatal error; either way the loops stop with it.
	stop()
	log.Info("settler stopping: batch in hand settled, leaving the group")
	wg.Wait()
	s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Whatever the relay handed the producer goes out before it is closed; an entry that
	// does not stays in the outbox and the next settler's relay publishes it.
	if err := producer.Flush(sctx); err != nil {
		log.Warn("relay producer not flushed in time", "err", err)
	}
	_ = srv.Shutdown(sctx)
	return runErr
}
