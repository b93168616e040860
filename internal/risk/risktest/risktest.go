// Package risktest owns what the risk layer's integration tests share (internal/risk,
// riskctl): fresh campaigns on the real dev stack, an in-process claimer whose decisions
// are kept for inspection, and setting rules directly in Redis. Tests only.
package risktest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Quiet discards logs.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Env is a test's connections to the dev stack.
type Env struct {
	T   testing.TB
	RDB *redis.Client
	PG  *pgxpool.Pool
	Cat *catalog.Catalog
}

// New connects to the dev stack (failing the test if it is down).
func New(t testing.TB) *Env {
	rdb := testenv.Redis(t)
	pg := testenv.PG(t)
	return &Env{T: t, RDB: rdb, PG: pg, Cat: catalog.New(pg, rdb)}
}

// Private is New with a redis-server of the test's own (no persistence, a free loopback
// port, killed when the test ends) in place of the shared one: for tests that read its
// statistics (INFO commandstats), which other agents' work on the shared server would
// move. Postgres stays the shared one (every id is fresh).
func Private(t testing.TB) *Env {
	t.Helper()
	port := strconv.Itoa(testenv.FreePort(t))
	testenv.Start(t, "redis-server", nil, "--bind", "127.0.0.1", "--port", port,
		"--save", "", "--appendonly", "no")
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	t.Cleanup(func() { rdb.Close() })
	testenv.Eventually(t, 10*time.Second, "private redis-server to answer", func() bool {
		return rdb.Ping(context.Background()).Err() == nil
	})
	pg := testenv.PG(t)
	return &Env{T: t, RDB: rdb, PG: pg, Cat: catalog.New(pg, rdb)}
}

// CommandStat is one command's line of INFO commandstats.
type CommandStat struct {
	Calls int64 // times it ran
	Usec  int64 // microseconds Redis spent in it (a script call's includes its commands)
}

// CommandStats returns INFO commandstats of e's Redis ("hmget" -> calls, usec) since it
// started; commands run by scripts are counted too.
func (e *Env) CommandStats() map[string]CommandStat {
	e.T.Helper()
	info, err := e.RDB.Info(Ctx(e.T, 5*time.Second), "commandstats").Result()
	if err != nil {
		e.T.Fatal(err)
	}
	stats := map[string]CommandStat{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var st CommandStat
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			var dst *int64
			switch k {
			case "calls":
				dst = &st.Calls
			case "usec":
				dst = &st.Usec
			default:
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				e.T.Fatalf("commandstats line %q: %v", line, err)
			}
			*dst = n
		}
		stats[strings.TrimPrefix(name, "cmdstat_")] = st
	}
	return stats
}

// MainThreadCPU is the CPU time (user + system) e's Redis main thread has used (INFO
// cpu): what running commands and scripts costs it, whatever else the machine runs.
func (e *Env) MainThreadCPU() time.Duration {
	e.T.Helper()
	info, err := e.RDB.Info(Ctx(e.T, 5*time.Second), "cpu").Result()
	if err != nil {
		e.T.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				e.T.Fatalf("INFO cpu line %q: %v", line, err)
			}
			sum += f
		}
	}
	return time.Duration(sum * float64(time.Second))
}

// Ctx is a context bounded to d, cancelled when the test ends.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Campaign creates a fresh business line and a running campaign (started a second ago,
// ending in an hour) with one SKU "rp-50" of the given stock and value 50.
func (e *Env) Campaign(stock, perUserLimit int) string {
	e.T.Helper()
	ctx := Ctx(e.T, 10*time.Second)
	bl := testenv.ID(e.T, "bl")
	if err := e.Cat.PutBusinessLine(ctx, bl, 1_000_000_000); err != nil {
		e.T.Fatal(err)
	}
	id := testenv.ID(e.T, "cmp")
	body := fmt.Sprintf(`{"name":"risk test","business_line":%q,"starts_at":%q,"ends_at":%q,"per_user_limit":%d,
		"budget":1000000000,"voucher_ttl":"72h","segment":null,"skus":[{"sku":"rp-50","stock":%d,"value":50}]}`,
		bl, time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano),
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano), perUserLimit, stock)
	cp, err := catalog.DecodeCampaign(id, []byte(body))
	if err != nil {
		e.T.Fatal(err)
	}
	if err := e.Cat.PutCampaign(ctx, cp); err != nil {
		e.T.Fatal(err)
	}
	return id
}

// Claimer starts an in-process claimer on the dev broker whose decisions go to rec
// (nil: not recorded).
func (e *Env) Claimer(rec claimer.DecisionRecorder) *claimer.Claimer {
	e.T.Helper()
	testenv.RequireBroker(e.T)
	kcl, err := kgo.NewClient(kafkaopt.Producer(testenv.Brokers(), time.Millisecond, 10*time.Second)...)
	if err != nil {
		e.T.Fatal(err)
	}
	cfg := claimer.Config{BatchWait: 100 * time.Microsecond}
	if rec != nil {
		cfg.Decisions = rec
	}
	c, err := claimer.New(cfg, e.RDB, kcl, nil, Quiet)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { c.Close(); kcl.Close() })
	return c
}

// SetRules writes rule settings ("device.max=3", "device.window=1m") at a level: the
// campaign's, or the global one when campaign is "" (tests should not: the dev stack is
// shared). It bypasses riskctl's audit: for tests of the claim script.
func (e *Env) SetRules(campaign string, settings ...string) {
	e.T.Helper()
	as, err := risk.ParseAssignments(settings)
	if err != nil {
		e.T.Fatal(err)
	}
	ctx := Ctx(e.T, 5*time.Second)
	old, err := risk.ReadRules(ctx, e.RDB, campaign)
	if err != nil {
		e.T.Fatal(err)
	}
	if _, err := e.RDB.TxPipelined(ctx, func(p redis.Pipeliner) error {
		risk.WriteRules(ctx, p, campaign, old, old.Apply(as))
		return nil
	}); err != nil {
		e.T.Fatal(err)
	}
}

// Claim makes one claim with a fresh request id and returns its outcome; a transport
// error fails the test.
func Claim(t testing.TB, c *claimer.Claimer, campaign, user, device, ip string) claimer.Outcome {
	t.Helper()
	r := &claimer.Request{RequestID: testenv.ID(t, "rq"), CampaignID: campaign, SKU: "rp-50",
		UserID: user, DeviceID: device, IP: ip}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Do(ctx, r); err != nil {
		t.Fatalf("claim %s/%s/%s: %v", user, device, ip, err)
	}
	return r.Outcome
}

// Recorder keeps every decision it is given, in order. It is the claimer's own
// interface, implemented in memory: the decisions are the real ones the script made.
type Recorder struct {
	mu sync.Mutex
	ds []risk.Decision
}

// Record copies d (its strings view request memory).
func (r *Recorder) Record(d *risk.Decision) {
	c := *d
	c.CampaignID, c.SKU, c.UserID = clone(c.CampaignID), clone(c.SKU), clone(c.UserID)
	c.DeviceID, c.IP, c.RequestID, c.ClaimID = clone(c.DeviceID), clone(c.IP), clone(c.RequestID), clone(c.ClaimID)
	r.mu.Lock()
	r.ds = append(r.ds, c)
	r.mu.Unlock()
}

func clone(s string) string { return string([]byte(s)) }

// Decisions returns the decisions of a campaign so far.
func (r *Recorder) Decisions(campaign string) []risk.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []risk.Decision
	for _, d := range r.ds {
		if d.CampaignID == campaign {
			out = append(out, d)
		}
	}
	return out
}
