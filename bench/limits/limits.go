// Package limits owns bench's measurement of the ceilings a gateway is bounded by on
// the machine it runs on, in one run: a bare fasthttp handler under bench's own
// open-loop generator (the HTTP stack and bench itself), the claim script called
// directly on the same Redis (one claim per call, and batched as the gateway batches),
// the broker's produce rate with the gateway's durability settings, and Postgres's
// insert rate (COPY and batched INSERT ... ON CONFLICT) into a scratch copy of the
// claims table. Every measurement is bounded in time and cleans up its scratch state.
package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/bench/load"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk/riskstate"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// ScratchTopic is the topic the produce measurement writes to (created, then deleted).
const ScratchTopic = "bench.limits"

// Config says what to measure and for how long.
type Config struct {
	// Redis, Brokers and PG are the stores; a nil or empty one is skipped.
	Redis   *redis.Client
	Brokers []string
	PG      *pgxpool.Pool
	// HTTP measures the bare handler; its Ramp is the template (Run.Traffic must be
	// set; Run.Target is replaced by the in-process server).
	HTTP     bool
	HTTPRamp load.RampConfig
	// Each bounds each store measurement (default 5s).
	Each time.Duration
	// Concurrency is how many callers drive Redis, the producer and Postgres at once
	// (default 8).
	Concurrency int
	// Batch is the claims per script call in the batched measurement (default 64, the
	// gateway's default MaxBatch); PGBatch the rows per COPY or INSERT (default 1000).
	Batch, PGBatch int
	Progress       io.Writer
}

// Ceiling is one measured limit.
type Ceiling struct {
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	PerSec float64 `json:"per_s"`
	Detail string  `json:"detail"`
	Error  string  `json:"error,omitempty"`
	// Compare names the gateway figure this ceiling bounds: "requests" (every request
	// costs one) or "accepted" (only accepted claims cost one).
	Compare string `json:"compare"`
}

// Result is every ceiling measured.
type Result struct {
	Ceilings []Ceiling        `json:"ceilings"`
	HTTPRamp *load.RampResult `json:"http_ramp,omitempty"`
}

func (c *Config) validate() error {
	if c.Each == 0 {
		c.Each = 5 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.Batch == 0 {
		c.Batch = 64
	}
	if c.PGBatch == 0 {
		c.PGBatch = 1000
	}
	switch {
	case c.Each < 100*time.Millisecond || c.Each > 10*time.Minute:
		return fmt.Errorf("limits: each %s: want 100ms..10m", c.Each)
	case c.Concurrency < 1 || c.Concurrency > 1024:
		return fmt.Errorf("limits: concurrency %d: want 1..1024", c.Concurrency)
	case c.Batch < 1 || c.Batch > 512:
		return fmt.Errorf("limits: batch %d: want 1..512", c.Batch)
	case c.PGBatch < 1 || c.PGBatch > 100000:
		return fmt.Errorf("limits: pg batch %d: want 1..100000", c.PGBatch)
	}
	return nil
}

func (c *Config) say(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format+"\n", args...)
	}
}

// Run measures every configured ceiling in turn. A store that fails is reported in its
// Ceiling's Error; Run itself fails only on bad configuration.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	res := &Result{}
	add := func(c Ceiling, err error) {
		if err != nil {
			c.Error = err.Error()
		}
		cfg.say("  %-28s %s", c.Name, describe(c))
		res.Ceilings = append(res.Ceilings, c)
	}
	if cfg.HTTP {
		cfg.say("-- bare fasthttp handler under the same generator (ramp)")
		c, rr, err := bareHTTP(ctx, cfg)
		res.HTTPRamp = rr
		add(c, err)
	}
	if cfg.Redis != nil {
		cfg.say("-- claim.lua on Redis, %s each", cfg.Each)
		c, err := claimScript(ctx, cfg, 1)
		add(c, err)
		c, err = claimScript(ctx, cfg, cfg.Batch)
		add(c, err)
	}
	if len(cfg.Brokers) > 0 {
		cfg.say("-- produce to %s, %s", ScratchTopic, cfg.Each)
		c, err := produce(ctx, cfg)
		add(c, err)
	}
	if cfg.PG != nil {
		cfg.say("-- Postgres inserts into a scratch claims table, %s each", cfg.Each)
		c, err := pgInsert(ctx, cfg, true)
		add(c, err)
		c, err = pgInsert(ctx, cfg, false)
		add(c, err)
	}
	return res, nil
}

func describe(c Ceiling) string {
	if c.Error != "" {
		return "FAILED: " + c.Error
	}
	return load.FmtInt(c.PerSec) + " " + c.Unit + "/s (" + c.Detail + ")"
}

func scratchID(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// bareHTTP ramps an in-process fasthttp handler that answers every claim with a fixed
// 200 of the gateway's size: the highest rate bench and the HTTP stack hold together
// on this machine under the same objective.
func bareHTTP(ctx context.Context, cfg Config) (Ceiling, *load.RampResult, error) {
	c := Ceiling{Name: "bare fasthttp handler", Unit: "requests", Compare: "requests"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return c, nil, err
	}
	body := []byte(`{"result":"accepted","claim_id":"bench-limits.0123456789abcdefghijklmnop","campaign_id":"bench-limits","sku":"rp-50","user_id":"u-1","value":50,"expires_at":"2030-01-01T00:00:00.000Z"}`)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(200)
			ctx.SetContentType("application/json")
			ctx.SetBody(body)
		},
		MaxRequestBodySize: 4096,
		Logger:             quiet{},
	}
	go srv.Serve(ln)
	defer srv.Shutdown()
	rc := cfg.HTTPRamp
	rc.Run.Target = "http://" + ln.Addr().String()
	rc.Run.Record = nil
	rc.Progress = cfg.Progress
	rc.Run.Progress = nil
	rr, err := load.Ramp(ctx, rc)
	if err != nil {
		return c, nil, err
	}
	c.PerSec = rr.HighestHeld
	c.Detail = "highest rate holding " + rr.Objective + ", limit: " + rr.Limit
	return c, rr, nil
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// claimScript calls claim.lua with n claims per call in the gateway's key layout (the
// campaign's keys, the 14 risk keys and the partner quotas, so the risk checks run as
// they do for the gateway; every claim is on the app channel) from Concurrency callers for Each on a scratch campaign. Every claim has its
// own user, device and IP, so whatever global risk rules are set accept it and the
// velocity and freeze logs are written as for real traffic. The campaign is never added to the campaigns set, so no
// settler relays its outbox; its idempotency records expire with it, and every other
// key is deleted at the end.
func claimScript(ctx context.Context, cfg Config, n int) (Ceiling, error) {
	c := Ceiling{Name: "claim.lua, 1 claim per call", Unit: "claims", Compare: "requests"}
	if n > 1 {
		c.Name = "claim.lua, " + strconv.Itoa(n) + " per call"
	}
	rdb := cfg.Redis
	camp := scratchID("bench-limits-")
	bl := camp + "-bl"
	now := time.Now()
	ends := now.Add(cfg.Each + time.Minute)
	keys := []string{rkeys.Meta(camp), rkeys.SKU(camp, "rp-50"), rkeys.SKUs(camp), rkeys.Users(camp), rkeys.BusinessLine(bl),
		rkeys.Outbox(camp), rkeys.Inflight(camp), rkeys.Rejections(camp)}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = rdb.Unlink(cctx, keys...).Err()
	}()
	// claim.lua decides nothing before the risk state is in Redis (its marker): what
	// catalog.warm does first, from the record in Postgres (internal/risk/riskstate).
	if cfg.PG != nil {
		runID, err := recovery.RunID(ctx, rdb)
		if err != nil {
			return c, err
		}
		if _, _, err := riskstate.Ensure(ctx, cfg.PG, rdb, runID); err != nil {
			return c, err
		}
	}
	// The layout catalog.warm writes, with stock and budgets no run can exhaust.
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, rkeys.Meta(camp), "bl", bl, "starts", now.Add(-time.Minute).UnixMilli(), "ends", ends.UnixMilli(),
			"limit", 1_000_000_000, "budget", int64(1)<<60, "ttl", int64(72*time.Hour/time.Millisecond), "paused", "0", "seg", "",
			"spent", 0, "taken", 0)
		p.HSet(ctx, rkeys.SKU(camp, "rp-50"), "stock", int64(1)<<50, "value", 1, "total", int64(1)<<50, "taken", 0)
		p.SAdd(ctx, rkeys.SKUs(camp), "rp-50")
		p.HSet(ctx, rkeys.BusinessLine(bl), "budget", int64(1)<<60, "spent", 0)
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("scratch campaign: %w", err)
	}
	var done, accepted atomic.Int64
	var firstErr error
	var errOnce sync.Once
	deadline := time.Now().Add(cfg.Each)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kk := make([]string, 0, n*claim.BatchKeysPerClaim)
			args := make([]any, 0, claim.BatchHeaderArgs+n*claim.BatchArgsPerClaim)
			var o claim.Outcome
			seq := 0
			for time.Now().Before(deadline) && ctx.Err() == nil {
				// A grace of 1 ms: the records expire with the scratch campaign.
				kk, args = claim.AppendHeader(kk, args, n, 1, 1000)
				for range n {
					seq++
					req := "w" + strconv.Itoa(w) + "-" + strconv.Itoa(seq)
					user, device := "u-"+req, "d-"+req
					ip := "198.18." + strconv.Itoa(seq>>8&255) + "." + strconv.Itoa(seq&255)
					k := rkeys.ClaimKeys(camp, "rp-50", req, bl, "", device, ip, user)
					kk, args = claim.AppendClaim(kk, args, &k, &claim.Args{RequestID: req, ClaimID: camp + "." + req,
						CampaignID: camp, SKU: "rp-50", UserID: user, DeviceID: device, IP: ip})
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				out, err := scripts.Claim.Run(cctx, rdb, kk, args...).Slice()
				cancel()
				if err == nil && !claim.ResultsFor(out, n) {
					err = fmt.Errorf("claim.lua answered %d values for %d claims", len(out), n)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				done.Add(int64(n))
				for i := 0; i < n; i++ {
					if claim.DecodeResult(out, i, &o); o.Code == claim.CodeAccepted {
						accepted.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if firstErr != nil {
		return c, fmt.Errorf("claim script: %w", firstErr)
	}
	if accepted.Load() != done.Load() {
		return c, fmt.Errorf("claim script accepted %d of %d scratch claims", accepted.Load(), done.Load())
	}
	c.PerSec = float64(done.Load()) / el
	c.Detail = fmt.Sprintf("%d callers, %s claims accepted in %.1fs; the gateway's key layout (stock, budgets, outbox, inflight, idempotency record, risk checks with the rules in force)",
		cfg.Concurrency, load.FmtInt(float64(done.Load())), el)
	return c, nil
}

// produce sends claim-sized records with the gateway's producer options (acks=all,
// idempotent, the same linger) to a scratch topic, all with one key as one campaign's
// claims are, and counts acknowledged records.
func produce(ctx context.Context, cfg Config) (Ceiling, error) {
	c := Ceiling{Name: "broker produce (acks=all)", Unit: "records", Compare: "accepted"}
	opts := append(kafkaopt.Producer(cfg.Brokers, 500*time.Microsecond, 10*time.Second),
		kgo.DefaultProduceTopic(ScratchTopic), kgo.MaxBufferedRecords(16384))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return c, err
	}
	defer cl.Close()
	if err := topic(ctx, cl, true); err != nil {
		return c, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = topic(cctx, cl, false)
	}()
	rec := claim.Record{Version: claim.Version, ClaimID: "bench-limits.0123456789abcdefghijklmnop", RequestID: "r-0123456789",
		CampaignID: "bench-limits", BusinessLine: "payments", SKU: "rp-50", UserID: "u-1234567", DeviceID: "d-1234567",
		IP: "198.18.1.2", Value: 50, ClaimedAtMs: time.Now().UnixMilli(), ExpiresAtMs: time.Now().Add(72 * time.Hour).UnixMilli(),
		OutboxID: "1700000000000-0"}
	value := rec.AppendJSON(nil)
	// Keyed like production (kafkaopt.ClaimKey: the claim id), so the records spread over
	// the partitions as a flash sale's do.
	keys := make([][]byte, 64)
	for i := range keys {
		keys[i] = kafkaopt.ClaimKey(rec.ClaimID + strconv.Itoa(i))
	}
	var seq int
	var acked, failed atomic.Int64
	var firstErr atomic.Value
	pctx, cancel := context.WithTimeout(ctx, cfg.Each)
	defer cancel()
	start := time.Now()
	for pctx.Err() == nil {
		seq++
		cl.Produce(pctx, &kgo.Record{Key: keys[seq%len(keys)], Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				if failed.Add(1) == 1 && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
					firstErr.Store(err)
				}
				return
			}
			acked.Add(1)
		})
	}
	fctx, fcancel := context.WithTimeout(ctx, 15*time.Second)
	defer fcancel()
	_ = cl.Flush(fctx)
	el := time.Since(start).Seconds()
	if e, ok := firstErr.Load().(error); ok && acked.Load() == 0 {
		return c, fmt.Errorf("produce: %w", e)
	}
	c.PerSec = float64(acked.Load()) / el
	c.Detail = fmt.Sprintf("%d-byte records, one key (one partition, as one campaign's claims), %s acknowledged in %.1fs",
		len(value), load.FmtInt(float64(acked.Load())), el)
	return c, nil
}

// topic creates (or deletes) the scratch topic with the Kafka protocol's own requests.
func topic(ctx context.Context, cl *kgo.Client, create bool) error {
	if create {
		req := kmsg.NewPtrCreateTopicsRequest()
		t := kmsg.NewCreateTopicsRequestTopic()
		t.Topic, t.NumPartitions, t.ReplicationFactor = ScratchTopic, 8, 1
		req.Topics = append(req.Topics, t)
		req.TimeoutMillis = 10000
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return fmt.Errorf("create topic %s: %w", ScratchTopic, err)
		}
		for _, t := range resp.Topics {
			if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("create topic %s: %w", ScratchTopic, err)
			}
		}
		return nil
	}
	req := kmsg.NewPtrDeleteTopicsRequest()
	t := kmsg.NewDeleteTopicsRequestTopic()
	name := ScratchTopic
	t.Topic = &name
	req.Topics = append(req.Topics, t)
	req.TopicNames = []string{ScratchTopic}
	req.TimeoutMillis = 10000
	_, err := req.RequestWith(ctx, cl)
	return err
}

// pgInsert writes claim rows into a scratch schema's copy of the claims table (same
// columns, keys and indexes) from Concurrency writers, one transaction per batch as
// the settler commits, by COPY or by INSERT ... ON CONFLICT DO NOTHING.
func pgInsert(ctx context.Context, cfg Config, useCopy bool) (Ceiling, error) {
	c := Ceiling{Name: "Postgres INSERT ON CONFLICT", Unit: "rows", Compare: "accepted"}
	if useCopy {
		c.Name = "Postgres COPY"
	}
	pg := cfg.PG
	schema := strings.ReplaceAll(scratchID("bench_limits_"), "-", "_")
	if _, err := pg.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		return c, fmt.Errorf("scratch schema: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = pg.Exec(cctx, `DROP SCHEMA `+schema+` CASCADE`)
	}()
	if _, err := pg.Exec(ctx, `CREATE TABLE `+schema+`.claims (LIKE claims INCLUDING ALL)`); err != nil {
		return c, fmt.Errorf("scratch table: %w", err)
	}
	cols := []string{"claim_id", "request_id", "campaign_id", "business_line", "sku", "user_id", "device_id", "ip",
		"value", "claimed_at", "expires_at", "kafka_partition", "kafka_offset"}
	insert := `INSERT INTO ` + schema + `.claims (` + strings.Join(cols, ",") + `)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
		                     $9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::int[], $13::bigint[])
		ON CONFLICT DO NOTHING`
	var rows atomic.Int64
	var firstErr error
	var errOnce sync.Once
	deadline := time.Now().Add(cfg.Each)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := cfg.PGBatch
			seq := 0
			now := time.Now()
			exp := now.Add(72 * time.Hour)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				ids, reqs := make([]string, b), make([]string, b)
				for i := range b {
					seq++
					ids[i] = "c" + strconv.Itoa(w) + "-" + strconv.Itoa(seq)
					reqs[i] = "r" + strconv.Itoa(w) + "-" + strconv.Itoa(seq)
				}
				var err error
				if useCopy {
					src := pgx.CopyFromSlice(b, func(i int) ([]any, error) {
						return []any{ids[i], reqs[i], "bench-limits", "payments", "rp-50", "u-" + ids[i], "d-1", "198.18.0.1",
							int64(50), now, exp, int32(0), int64(seq)}, nil
					})
					_, err = pg.CopyFrom(ctx, pgx.Identifier{schema, "claims"}, cols, src)
				} else {
					camp, bl, sku, dev, ip := fill(b, "bench-limits"), fill(b, "payments"), fill(b, "rp-50"), fill(b, "d-1"), fill(b, "198.18.0.1")
					vals, claimed, expires := make([]int64, b), make([]time.Time, b), make([]time.Time, b)
					parts, offs := make([]int32, b), make([]int64, b)
					users := make([]string, b)
					for i := range b {
						vals[i], claimed[i], expires[i], offs[i], users[i] = 50, now, exp, int64(i), "u-"+ids[i]
					}
					_, err = pg.Exec(ctx, insert, ids, reqs, camp, bl, sku, users, dev, ip, vals, claimed, expires, parts, offs)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				rows.Add(int64(b))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if firstErr != nil && rows.Load() == 0 {
		return c, firstErr
	}
	c.PerSec = float64(rows.Load()) / el
	c.Detail = fmt.Sprintf("%d writers, %d rows per transaction, claims' keys and indexes, %s rows in %.1fs",
		cfg.Concurrency, cfg.PGBatch, load.FmtInt(float64(rows.Load())), el)
	return c, nil
}

func fill(n int, s string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// Gateway is the gateway's measured throughput the ceilings are compared with.
type Gateway struct {
	// Requests is the highest offered rate that held the objective; Accepted the
	// accepted claims per second at that rate.
	Requests, Accepted float64
	Source             string
}

// Print writes the ceilings and, when the gateway's figures are known, the gateway's
// throughput as a share of each.
func (r *Result) Print(w io.Writer, gw *Gateway) {
	fmt.Fprintf(w, "ceilings on this machine:\n")
	for _, c := range r.Ceilings {
		fmt.Fprintf(w, "  %-30s %s\n", c.Name, describe(c))
	}
	if gw == nil {
		fmt.Fprintf(w, "no gateway figure given (--from DIR of a ramp, or --gateway-rate): ratios not computed\n")
		return
	}
	fmt.Fprintf(w, "gateway: %s requests/s held, %s accepted claims/s (%s)\n", load.FmtInt(gw.Requests), load.FmtInt(gw.Accepted), gw.Source)
	for _, c := range r.Ceilings {
		if c.Error != "" || c.PerSec <= 0 {
			continue
		}
		g, what := gw.Requests, "requests/s"
		if c.Compare == "accepted" {
			g, what = gw.Accepted, "accepted/s"
		}
		fmt.Fprintf(w, "  gateway %s ÷ %-30s = %5.1f%%\n", what, c.Name, 100*g/c.PerSec)
	}
}

// Ratios returns the gateway's throughput as a fraction of each ceiling, by name.
func (r *Result) Ratios(gw Gateway) map[string]float64 {
	out := map[string]float64{}
	for _, c := range r.Ceilings {
		if c.Error != "" || c.PerSec <= 0 {
			continue
		}
		g := gw.Requests
		if c.Compare == "accepted" {
			g = gw.Accepted
		}
		out[c.Name] = g / c.PerSec
	}
	return out
}
