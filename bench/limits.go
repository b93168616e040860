package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/bench/limits"
	"github.com/flashgate/flashgate/bench/load"
	"github.com/flashgate/flashgate/bench/report"
	"github.com/flashgate/flashgate/bench/traffic"
	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/store"
)

func cmdLimits(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("limits", "limits [--from DIR | --gateway-rate N/s --gateway-accepted N/s] [flags]", stdout, stderr)
	fe := flagenv.New(fs)
	var (
		redisAddr, pgURL, brokers, only, from, gwRate, gwAcc, slo, start, step, maxRate, out string
		each, stepDur, lagBudget                                                             time.Duration
		concurrency, batch, pgBatch                                                          int
		asJSON                                                                               bool
	)
	fe.RedisAddr(&redisAddr, "Redis address")
	var redisAuth flagenv.RedisAuth
	fe.RedisAuth(&redisAuth)
	fe.PGURL(&pgURL, "Postgres URL")
	fe.KafkaBrokers(&brokers, "Kafka brokers, comma-separated")
	fs.StringVar(&only, "only", "http,redis,kafka,pg", "which ceilings to measure, comma-separated")
	fs.DurationVar(&each, "each", 5*time.Second, "how long each store measurement runs")
	fs.IntVar(&concurrency, "concurrency", 8, "callers driving Redis, the producer and Postgres at once")
	fs.IntVar(&batch, "batch", 64, "claims per script call in the batched measurement (the gateway's default batch)")
	fs.IntVar(&pgBatch, "pg-batch", 1000, "rows per COPY or INSERT transaction")
	fs.StringVar(&slo, "slo", "p99=10ms", "objective the bare HTTP handler's ramp must hold (use the gateway's)")
	fs.StringVar(&start, "start", "2000/s", "first rate of the bare HTTP handler's ramp")
	fs.StringVar(&step, "step", "x1.5", "step of the bare HTTP handler's ramp")
	fs.StringVar(&maxRate, "max-rate", "500000/s", "highest rate the bare HTTP handler's ramp tries")
	fs.DurationVar(&stepDur, "step-duration", 3*time.Second, "duration of each bare HTTP step")
	fs.DurationVar(&lagBudget, "lag-budget", 0, "schedule lag (p99) of the bare HTTP ramp beyond which bench says it could not keep its schedule (default: a quarter of --slo's tightest bound, as bench ramp)")
	fs.StringVar(&from, "from", "", "a ramp's output folder (or result.json): the gateway figures to compare the ceilings with")
	fs.StringVar(&gwRate, "gateway-rate", "", "the gateway's highest request rate that held, if not --from")
	fs.StringVar(&gwAcc, "gateway-accepted", "", "the gateway's accepted claims per second at that rate, if not --from")
	fs.StringVar(&out, "out", "", "folder to write limits.json into (default: the --from folder, or none)")
	fs.BoolVar(&asJSON, "json", false, "print the ceilings as JSON")
	if code, stop := parse(fs, fe.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "limits", errUnexpectedArgs(fs.Args()))
	}
	want := map[string]bool{}
	for _, o := range strings.Split(only, ",") {
		switch o = strings.TrimSpace(o); o {
		case "http", "redis", "kafka", "pg":
			want[o] = true
		case "":
		default:
			return usageErr(stderr, "limits", fmt.Errorf("--only: unknown %q (want http, redis, kafka, pg)", o))
		}
	}
	var gw *limits.Gateway
	switch {
	case from != "":
		f, err := report.Read(from)
		if err != nil {
			return usageErr(stderr, "limits", fmt.Errorf("--from: %w", err))
		}
		if gw = gatewayFrom(f, from); gw == nil {
			fmt.Fprintf(stderr, "bench limits: --from %s: no step held its objective, so there is no gateway figure to compare; measuring the ceilings alone\n", from)
		}
		if out == "" {
			if st, err := os.Stat(from); err == nil && st.IsDir() {
				out = from
			} else {
				out = filepath.Dir(from)
			}
		}
	case gwRate != "":
		r, err := load.ParseRate(gwRate)
		if err != nil {
			return usageErr(stderr, "limits", fmt.Errorf("--gateway-rate: %w", err))
		}
		a := r
		if gwAcc != "" {
			if a, err = load.ParseRate(gwAcc); err != nil {
				return usageErr(stderr, "limits", fmt.Errorf("--gateway-accepted: %w", err))
			}
		}
		gw = &limits.Gateway{Requests: r, Accepted: a, Source: "given on the command line"}
	}
	cfg := limits.Config{Each: each, Concurrency: concurrency, Batch: batch, PGBatch: pgBatch, Progress: stderr, HTTP: want["http"]}
	if cfg.HTTP {
		var err error
		rc := load.RampConfig{StepDuration: stepDur, Refine: 2, Pause: 500 * time.Millisecond,
			Run: load.Config{LagBudget: lagBudget, Traffic: traffic.Config{Campaign: "bench-limits", SKUs: []string{"rp-50", "rp-100"}, Seed: 1}}}
		if rc.Objective.Bounds, err = load.ParseSLO(slo); err != nil {
			return usageErr(stderr, "limits", err)
		}
		if lagBudget < 0 {
			return usageErr(stderr, "limits", fmt.Errorf("--lag-budget %s: must not be negative", lagBudget))
		}
		rc.Objective.ErrorBudget = 0.01
		if rc.Start, err = load.ParseRate(start); err != nil {
			return usageErr(stderr, "limits", fmt.Errorf("--start: %w", err))
		}
		if rc.MaxRate, err = load.ParseRate(maxRate); err != nil {
			return usageErr(stderr, "limits", fmt.Errorf("--max-rate: %w", err))
		}
		if rc.Step, err = load.ParseStep(step); err != nil {
			return usageErr(stderr, "limits", err)
		}
		cfg.HTTPRamp = rc
	}
	if want["redis"] {
		rdb := redisAuth.NewClient(&redis.Options{Addr: redisAddr, DialTimeout: 3 * time.Second, PoolSize: 4 * concurrency})
		defer rdb.Close()
		cfg.Redis = rdb
	}
	if want["kafka"] {
		cfg.Brokers = flagenv.Brokers(brokers)
	}
	if want["pg"] {
		pg, err := store.Open(ctx, pgURL, int32(concurrency+2))
		if err != nil {
			return failed(stderr, "limits", err)
		}
		defer pg.Close()
		cfg.PG = pg
	}
	res, err := limits.Run(ctx, cfg)
	if err != nil {
		return usageErr(stderr, "limits", err)
	}
	code := exitHeld
	for _, c := range res.Ceilings {
		if c.Error != "" {
			code = exitBroke
		}
	}
	doc := struct {
		Tool     string             `json:"tool"`
		Mode     string             `json:"mode"`
		Limits   *limits.Result     `json:"limits"`
		Gateway  *limits.Gateway    `json:"gateway,omitempty"`
		Ratios   map[string]float64 `json:"gateway_share_of_ceiling,omitempty"`
		Measured time.Time          `json:"measured"`
	}{Tool: "flashgate-bench", Mode: "limits", Limits: res, Gateway: gw, Measured: time.Now().UTC()}
	if gw != nil {
		doc.Ratios = res.Ratios(*gw)
	}
	if out != "" {
		b, _ := json.MarshalIndent(doc, "", "  ")
		if err := os.MkdirAll(out, 0o755); err == nil {
			err = os.WriteFile(filepath.Join(out, "limits.json"), append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "bench limits: %v\n", err)
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc)
	} else {
		res.Print(stdout, gw)
		if out != "" {
			abs, _ := filepath.Abs(filepath.Join(out, "limits.json"))
			fmt.Fprintf(stdout, "limits: %s\n", abs)
		}
	}
	return code
}

// gatewayFrom reads the gateway's figures from a ramp (its highest step that held) or
// a run that held.
func gatewayFrom(f *report.File, src string) *limits.Gateway {
	switch {
	case f.Ramp != nil:
		for _, s := range f.Ramp.Steps {
			if s.Held && s.Rate == f.Ramp.HighestHeld {
				return &limits.Gateway{Requests: s.Rate, Accepted: s.Result.AcceptedPerSec,
					Source: "ramp " + src + ", highest step holding " + f.Ramp.Objective}
			}
		}
	case f.Run != nil && (f.Run.Verdict == nil || f.Run.Verdict.Held):
		return &limits.Gateway{Requests: f.Run.Rate, Accepted: f.Run.AcceptedPerSec, Source: "run " + src}
	}
	return nil
}
