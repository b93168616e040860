package limits

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/bench/load"
	"github.com/flashgate/flashgate/bench/traffic"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Every ceiling is measured against the real dev stack, briefly, and leaves nothing
// behind: no scratch campaign keys in Redis, no scratch schema in Postgres.
func TestCeilings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	testenv.RequireBroker(t)
	slo, err := load.ParseSLO("p99=500ms")
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	res, err := Run(ctx, Config{
		Redis: rdb, Brokers: testenv.Brokers(), PG: pg, HTTP: true,
		HTTPRamp: load.RampConfig{
			Run: load.Config{Rate: 1, Duration: time.Second, LagBudget: 500 * time.Millisecond,
				Traffic: traffic.Config{Campaign: "bench-limits", SKUs: []string{"rp-50"}, Users: 1000, Seed: 1}},
			Start: 200, Step: load.Step{Factor: 2}, StepDuration: 500 * time.Millisecond, MaxRate: 800,
			Objective: load.Objective{Bounds: slo, ErrorBudget: 0.01}, Pause: 50 * time.Millisecond,
		},
		Each: 400 * time.Millisecond, Concurrency: 2, Batch: 16, PGBatch: 100, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range res.Ceilings {
		names[c.Name] = true
		if c.Error != "" || c.PerSec <= 0 {
			t.Errorf("%s: %v/s, error %q", c.Name, c.PerSec, c.Error)
		}
	}
	for _, want := range []string{"bare fasthttp handler", "claim.lua, 1 claim per call", "claim.lua, 16 per call",
		"broker produce (acks=all)", "Postgres COPY", "Postgres INSERT ON CONFLICT"} {
		if !names[want] {
			t.Errorf("no ceiling %q in %+v", want, res.Ceilings)
		}
	}
	var out bytes.Buffer
	res.Print(&out, &Gateway{Requests: 100, Accepted: 50, Source: "test"})
	if !strings.Contains(out.String(), "gateway accepted/s ÷ Postgres COPY") {
		t.Errorf("print:\n%s", out.String())
	}
	if r := res.Ratios(Gateway{Requests: 100, Accepted: 50}); len(r) != 6 {
		t.Errorf("ratios %v", r)
	}

	var keys []string
	iter := rdb.Scan(ctx, 0, "fg:{bench-limits-*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		// Idempotency records expire on their own a minute after the scratch campaign.
		if !strings.Contains(k, ":rq:") {
			t.Errorf("scratch key left in Redis: %s", k)
		}
	}
	var schemas int
	if err := pg.QueryRow(ctx, `SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'bench_limits_%'`).Scan(&schemas); err != nil {
		t.Fatal(err)
	}
	if schemas != 0 {
		t.Errorf("%d scratch schemas left in Postgres", schemas)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Each: time.Millisecond}, "each"},
		{Config{Concurrency: -1}, "concurrency"},
		{Config{Batch: 1000}, "batch"},
	} {
		if _, err := Run(context.Background(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %s", err, tc.want)
		}
	}
}
