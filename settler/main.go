// Command settler moves accepted claims from Kafka (flash.claims) into Postgres, exactly
// once in effect, and serves its metrics and health on FLASH_SETTLER_ADDR. The work is
// in settler/settle; this file only reads flags, wires dependencies, and shuts down in
// order: stop polling, finish and commit the batch in hand, leave the group, close.
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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/store"
	"github.com/flashgate/flashgate/settler/settle"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	var (
		redisAddr, brokers, pgURL, addr, logLevel string
		cfg                                       settle.Config
	)
	fs := flag.NewFlagSet("settler", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: settler [flags]\n\nConsumes flash.claims into Postgres (claims + budget ledger), committing offsets only after Postgres commits.\n\n")
		fs.PrintDefaults()
	}
	f := flagenv.New(fs)
	f.String(&redisAddr, "redis", "FLASH_REDIS_ADDR", flagenv.DefaultRedisAddr, "Redis address (host:port)")
	f.String(&brokers, "brokers", "FLASH_KAFKA_BROKERS", flagenv.DefaultKafkaBrokers, "Kafka seed brokers, comma-separated")
	f.String(&pgURL, "pg", "FLASH_PG_URL", flagenv.DefaultPGURL, "Postgres URL")
	f.String(&addr, "addr", "FLASH_SETTLER_ADDR", "127.0.0.1:8082", "listen address of /metrics, /healthz and /readyz")
	f.String(&cfg.Topic, "topic", "FLASH_SETTLER_TOPIC", kafkaopt.ClaimsTopic, "topic of accepted claims (the gateway produces to "+kafkaopt.ClaimsTopic+"; another name isolates a test or staging settler)")
	f.String(&cfg.Group, "group", "FLASH_SETTLER_GROUP", kafkaopt.SettlerGroup, "Kafka consumer group; a group with no committed offsets starts at the oldest record")
	f.Duration(&cfg.SessionTimeout, "session-timeout", "FLASH_SETTLER_SESSION_TIMEOUT", settle.DefaultSessionTimeout, "how long the group waits for a silent (killed) member before its partitions move to another settler")
	f.Int(&cfg.MaxBatch, "batch", "FLASH_SETTLER_BATCH", settle.DefaultMaxBatch, "most records settled per batch (one Postgres transaction, one offset commit)")
	f.Duration(&cfg.PollWait, "poll-wait", "FLASH_SETTLER_POLL_WAIT", settle.DefaultPollWait, "how long a fetch waits for records before the settler settles what it has")
	f.Duration(&cfg.RetryMin, "retry-min", "FLASH_SETTLER_RETRY_MIN", settle.DefaultRetryMin, "first backoff after a Redis or Postgres failure (doubles per attempt)")
	f.Duration(&cfg.RetryMax, "retry-max", "FLASH_SETTLER_RETRY_MAX", settle.DefaultRetryMax, "longest backoff between retries of a failed batch")
	f.Duration(&cfg.RedisTimeout, "redis-timeout", "FLASH_SETTLER_REDIS_TIMEOUT", settle.DefaultRedisTimeout, "timeout of one Redis call")
	f.Duration(&cfg.PGTimeout, "pg-timeout", "FLASH_SETTLER_PG_TIMEOUT", settle.DefaultPGTimeout, "timeout of one Postgres transaction")
	f.Duration(&cfg.DrainTimeout, "drain-timeout", "FLASH_SETTLER_DRAIN_TIMEOUT", settle.DefaultDrainTimeout, "on SIGTERM, how long the batch in hand may take to settle and commit")
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
	if err := serve(cfg, redisAddr, pgURL, addr, log); err != nil {
		log.Error("settler stopped", "err", err)
		return 1
	}
	return 0
}

// flagOf names the flag (and its environment twin) behind each settle.Config field, so
// a bad value is reported as the user typed it.
var flagOf = map[string]string{
	"Brokers":        "-brokers (FLASH_KAFKA_BROKERS)",
	"Group":          "-group (FLASH_SETTLER_GROUP)",
	"MaxBatch":       "-batch (FLASH_SETTLER_BATCH)",
	"SessionTimeout": "-session-timeout (FLASH_SETTLER_SESSION_TIMEOUT)",
	"PollWait":       "-poll-wait (FLASH_SETTLER_POLL_WAIT)",
	"RetryMin":       "-retry-min (FLASH_SETTLER_RETRY_MIN)",
	"RetryMax":       "-retry-max (FLASH_SETTLER_RETRY_MAX)",
	"RedisTimeout":   "-redis-timeout (FLASH_SETTLER_REDIS_TIMEOUT)",
	"PGTimeout":      "-pg-timeout (FLASH_SETTLER_PG_TIMEOUT)",
	"DrainTimeout":   "-drain-timeout (FLASH_SETTLER_DRAIN_TIMEOUT)",
}

func serve(cfg settle.Config, redisAddr, pgURL, addr string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	defer ln.Close()

	pg, err := store.Open(ctx, pgURL, 8)
	if err != nil {
		return err
	}
	defer pg.Close()
	if err := store.Migrate(pg); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, DialTimeout: 2 * time.Second,
		ReadTimeout: cfg.RedisTimeout, WriteTimeout: cfg.RedisTimeout})
	defer rdb.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s, err := settle.New(cfg, rdb, pg, settle.NewMetrics(reg), log)
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.Ready(rctx); err != nil {
			http.Error(w, "not ready: "+strings.ReplaceAll(err.Error(), "\n", " "), http.StatusServiceUnavailable)
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
	log.Info("settler running", "addr", ln.Addr().String(), "group", cfg.Group, "brokers", cfg.Brokers)

	runErr := s.Run(ctx)
	log.Info("settler stopping: batch in hand settled, leaving the group")
	s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return runErr
}
