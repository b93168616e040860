package settle_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/store"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/settle"
)

// logger writes to the test log when -v is given; otherwise it is quiet.
func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// running is a settler running in-process in its own consumer group.
type running struct {
	t    *testing.T
	s    *settle.Settler
	reg  *prometheus.Registry
	stop context.CancelFunc
	done chan error
}

type deps struct {
	rdb          *redis.Client
	pg           *pgxpool.Pool
	topic, group string
	cfg          settle.Config
}

func startSettler(t *testing.T, d deps) *running {
	t.Helper()
	cfg := d.cfg
	cfg.Brokers = testenv.Brokers()
	cfg.Topic, cfg.Group = d.topic, d.group
	if cfg.RetryMax == 0 {
		cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	}
	reg := prometheus.NewRegistry()
	s, err := settle.New(cfg, d.rdb, d.pg, settle.NewMetrics(reg), logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, s: s, reg: reg, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.shutdown() })
	return r
}

// shutdown cancels Run and waits for it (bounded), then closes the settler. It returns
// Run's error.
func (r *running) shutdown() error {
	r.stop()
	if r.done == nil {
		return nil
	}
	var err error
	select {
	case err = <-r.done:
	case <-time.After(30 * time.Second):
		r.t.Errorf("settler did not stop within 30s of cancel")
	}
	r.done = nil
	r.s.Close()
	return err
}

// metric reads a counter or gauge (summing every label set) from the settler's registry.
func (r *running) metric(name string) float64 {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += value(m)
		}
		return sum
	}
	r.t.Fatalf("no metric %s", name)
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func (r *running) waitMetric(name string, atLeast float64, d time.Duration) {
	r.t.Helper()
	testenv.Eventually(r.t, d, name+" to reach "+strconv.FormatFloat(atLeast, 'f', -1, 64), func() bool {
		return r.metric(name) >= atLeast
	})
}

func (r *running) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return r.s.Ready(ctx)
}

func waitRows(t *testing.T, c *testenv.Campaign, pg *pgxpool.Pool, want int64) testenv.Books {
	t.Helper()
	var b testenv.Books
	testenv.Eventually(t, 60*time.Second, "claim rows to be written", func() bool {
		b = c.ReadBooks(t, pg)
		return b.Claims >= want
	})
	return c.ReadBooks(t, pg)
}

func checkBooks(t *testing.T, c *testenv.Campaign, b testenv.Books, n int64) {
	t.Helper()
	want := testenv.Books{Claims: n, DistinctRequests: n, ClaimValue: n * c.Value, Reserves: n, ReserveAmount: n * c.Value}
	if b != want {
		t.Fatalf("books of %s: got %+v; want %+v", c.ID, b, want)
	}
}

// maxOffsets is the highest offset per partition among records.
func maxOffsets(krs []*kgo.Record) map[int32]int64 {
	out := map[int32]int64{}
	for _, r := range krs {
		if o, ok := out[r.Partition]; !ok || r.Offset > o {
			out[r.Partition] = r.Offset
		}
	}
	return out
}

// committedPast reports whether the group's commits cover every record in krs.
func committedPast(t *testing.T, group string, krs []*kgo.Record) bool {
	committed := testenv.Committed(t, group, krs[0].Topic)
	for p, o := range maxOffsets(krs) {
		if committed[p] <= o {
			return false
		}
	}
	return true
}

// committedNone reports whether no commit of the group covers any record in krs.
func committedNone(t *testing.T, group string, krs []*kgo.Record) bool {
	committed := testenv.Committed(t, group, krs[0].Topic)
	for _, r := range krs {
		if committed[r.Partition] > r.Offset {
			return false
		}
	}
	return true
}

func TestSettlesExactlyOnceAcrossRedelivery(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	const n = 300
	c, recs := testenv.DurableCampaign(t, rdb, pg, n)
	kcl := testenv.Producer(t)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	krs := testenv.Produce(t, kcl, topic, recs)

	r := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group, cfg: settle.Config{MaxBatch: 64}})
	b := waitRows(t, c, pg, n)
	checkBooks(t, c, b, n)
	testenv.Eventually(t, 10*time.Second, "offsets committed past every record", func() bool {
		return committedPast(t, group, krs)
	})
	if ob, inf := c.Leftovers(t); ob != 0 || inf != 0 {
		t.Fatalf("after settling: outbox %d, inflight %d; want 0, 0", ob, inf)
	}
	for _, rec := range recs[:5] {
		if st := c.RequestState(t, rec.RequestID); st != "S" {
			t.Fatalf("request %s: state %q after settling, want S", rec.RequestID, st)
		}
	}
	if got := r.metric("flashgate_settler_claims_written_total"); got != n {
		t.Fatalf("claims written metric %v, want %d", got, n)
	}
	if err := r.ready(); err != nil {
		t.Fatalf("ready: %v", err)
	}

	// Redelivery: the same records again, in the same group...
	krs2 := testenv.Produce(t, kcl, topic, recs)
	r.waitMetric("flashgate_settler_duplicates_ignored_total", n, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, "offsets committed past the redelivered records", func() bool {
		return committedPast(t, group, krs2)
	})
	checkBooks(t, c, c.ReadBooks(t, pg), n)
	for name, want := range map[string]float64{
		"flashgate_settler_records_consumed_total":   2 * n,
		"flashgate_settler_claims_written_total":     n,
		"flashgate_settler_duplicates_ignored_total": n,
		"flashgate_settler_confirm_skipped_total":    0,
		"flashgate_settler_decode_errors_total":      0,
	} {
		if got := r.metric(name); got != want {
			t.Fatalf("%s = %v after redelivery, want %v", name, got, want)
		}
	}
	if err := r.shutdown(); err != nil {
		t.Fatalf("run: %v", err)
	}

	// ...and everything once more through a second settler in a group of its own, as
	// if the first one's offsets were lost: a new group starts at the topic's oldest
	// record, so it reads the 2n records so far plus n more, the same claim up to three
	// times in one batch.
	r2 := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: testenv.ID(t, "settler-test"), cfg: settle.Config{MaxBatch: 500}})
	testenv.Produce(t, kcl, topic, recs)
	r2.waitMetric("flashgate_settler_records_consumed_total", 3*n, 60*time.Second)
	r2.waitMetric("flashgate_settler_duplicates_ignored_total", 3*n, 60*time.Second)
	checkBooks(t, c, c.ReadBooks(t, pg), n)
	if got := r2.metric("flashgate_settler_claims_written_total"); got != 0 {
		t.Fatalf("second settler wrote %v claims, want 0", got)
	}
}

func TestVoidedClaimIsNotWritten(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	c := testenv.NewCampaign(t, rdb, pg, 10)
	recs := c.Claim(t, 5)
	voided := recs[1]
	c.MarkDurable(t, append(recs[:1:1], recs[2:]...))
	c.Void(t, voided) // its produce "failed": the gateway gave it back
	// The client retried the same request_id and got a new claim.
	again := c.Reclaim(t, voided)
	c.MarkDurable(t, []claim.Record{again})
	// ...but the first produce did reach Kafka after all, so both records arrive.
	all := append(append([]claim.Record(nil), recs...), again)

	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	testenv.Produce(t, testenv.Producer(t), topic, all)
	r := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group})
	b := waitRows(t, c, pg, 5)
	r.waitMetric("flashgate_settler_records_consumed_total", 6, 30*time.Second)
	checkBooks(t, c, b, 5)
	ids := c.ClaimIDs(t, pg)
	if ids[voided.ClaimID] {
		t.Fatalf("voided claim %s was written", voided.ClaimID)
	}
	if !ids[again.ClaimID] {
		t.Fatalf("the retry's claim %s was not written", again.ClaimID)
	}
	if got := r.metric("flashgate_settler_confirm_skipped_total"); got != 1 {
		t.Fatalf("confirm skipped %v, want 1", got)
	}
	if ob, inf := c.Leftovers(t); ob != 0 || inf != 0 {
		t.Fatalf("outbox %d, inflight %d; want 0, 0", ob, inf)
	}
}

func TestUndecodableRecordsAreSkippedAndCommitted(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	c := testenv.NewCampaign(t, rdb, pg, 10)
	recs := c.Claim(t, 4)
	c.MarkDurable(t, recs)
	nul := recs[3]
	nul.DeviceID = "d\x00evil" // decodes, but Postgres text cannot hold it
	good := recs[:3]

	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	kcl := testenv.Producer(t)
	key := []byte(c.ID)
	var krs []*kgo.Record
	krs = append(krs, testenv.ProduceRaw(t, kcl, topic, []*kgo.Record{
		{Key: key, Value: []byte(`not json`)},
		{Key: key, Value: []byte(`{"v":99,"claim_id":"x"}`)},
		{Key: key, Value: nul.AppendJSON(nil)},
	})...)
	krs = append(krs, testenv.Produce(t, kcl, topic, good)...)
	r := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group})
	b := waitRows(t, c, pg, 3)
	checkBooks(t, c, b, 3)
	r.waitMetric("flashgate_settler_decode_errors_total", 3, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, "offsets committed past the bad records too", func() bool {
		return committedPast(t, group, krs)
	})
}

// TestRedisOutageHoldsTheBatch cuts one settler off from the real Redis (through a
// proxy): it must not write or commit anything while confirm cannot run, report not
// ready, and settle everything once Redis is back.
func TestRedisOutageHoldsTheBatch(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	c, recs := testenv.DurableCampaign(t, rdb, pg, 40)
	proxy := testenv.NewProxy(t, testenv.RedisAddr())
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { viaProxy.Close() })
	r := holdsTheBatch(t, c, recs, pg, proxy, "Redis", "flashgate_settler_redis_errors_total",
		deps{rdb: viaProxy, pg: pg, cfg: settle.Config{RedisTimeout: time.Second}})
	testenv.Eventually(t, 10*time.Second, "ready again", func() bool { return r.ready() == nil })
}

// TestPostgresOutageHoldsTheBatch cuts one settler off from the real Postgres: the
// transaction fails and is retried, nothing is committed, and every claim is written
// once Postgres is back.
func TestPostgresOutageHoldsTheBatch(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	c, recs := testenv.DurableCampaign(t, rdb, pg, 40)
	proxy := testenv.NewProxy(t, hostPort(t, testenv.PGURL()))
	pgURL := strings.Replace(testenv.PGURL(), hostPort(t, testenv.PGURL()), proxy.Addr(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	viaProxy, err := store.Open(ctx, pgURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(viaProxy.Close)
	holdsTheBatch(t, c, recs, pg, proxy, "Postgres", "flashgate_settler_postgres_errors_total",
		deps{rdb: rdb, pg: viaProxy, cfg: settle.Config{PGTimeout: 2 * time.Second}})
	if ob, inf := c.Leftovers(t); ob != 0 || inf != 0 {
		t.Fatalf("outbox %d, inflight %d; want 0, 0", ob, inf)
	}
}

// holdsTheBatch starts a settler on d (a topic and group of its own), cuts it off from
// server through proxy, produces recs, and checks that the settler counts errors on
// metric, is not ready, writes nothing and commits nothing; then restores the server
// and checks every claim is written once and the offsets are committed past them.
func holdsTheBatch(t *testing.T, c *testenv.Campaign, recs []claim.Record, pg *pgxpool.Pool, proxy *testenv.Proxy,
	server, metric string, d deps) *running {
	t.Helper()
	d.topic, d.group = testenv.NewTopic(t), testenv.ID(t, "settler-test")
	r := startSettler(t, d)
	testenv.Eventually(t, 30*time.Second, "settler ready", func() bool { return r.ready() == nil })

	proxy.Cut()
	krs := testenv.Produce(t, testenv.Producer(t), d.topic, recs)
	r.waitMetric(metric, 3, 30*time.Second)
	if err := r.ready(); err == nil {
		t.Fatalf("ready while %s is cut off", server)
	}
	if b := c.ReadBooks(t, pg); b.Claims != 0 {
		t.Fatalf("%d rows written while the settler's %s is cut off", b.Claims, server)
	}
	if !committedNone(t, d.group, krs) {
		t.Fatal("offsets committed past records that were not written")
	}

	proxy.Restore()
	n := int64(len(recs))
	checkBooks(t, c, waitRows(t, c, pg, n), n)
	testenv.Eventually(t, 10*time.Second, "offsets committed after recovery", func() bool {
		return committedPast(t, d.group, krs)
	})
	return r
}

// TestShutdownAbandonsAnUnwritableBatchUncommitted stops a settler whose Postgres is
// gone: the batch in hand cannot be settled within the drain time, so Run reports it and
// its offsets stay uncommitted; the next settler in the group writes it.
func TestShutdownAbandonsAnUnwritableBatchUncommitted(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	const n = 20
	c, recs := testenv.DurableCampaign(t, rdb, pg, n)

	proxy := testenv.NewProxy(t, hostPort(t, testenv.PGURL()))
	pgURL := strings.Replace(testenv.PGURL(), hostPort(t, testenv.PGURL()), proxy.Addr(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	viaProxy, err := store.Open(ctx, pgURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(viaProxy.Close)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	r := startSettler(t, deps{rdb: rdb, pg: viaProxy, topic: topic, group: group,
		cfg: settle.Config{PGTimeout: time.Second, DrainTimeout: 500 * time.Millisecond}})
	testenv.Eventually(t, 30*time.Second, "settler ready", func() bool { return r.ready() == nil })
	proxy.Cut()
	krs := testenv.Produce(t, testenv.Producer(t), topic, recs)
	r.waitMetric("flashgate_settler_postgres_errors_total", 1, 30*time.Second)
	if err := r.shutdown(); err == nil {
		t.Fatal("Run returned nil although its last batch was not settled")
	} else {
		t.Logf("run: %v", err)
	}
	if !committedNone(t, group, krs) {
		t.Fatal("offsets committed for an abandoned batch")
	}

	startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group})
	checkBooks(t, c, waitRows(t, c, pg, n), n)
}

func hostPort(t *testing.T, url string) string {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.ConnConfig.Host + ":" + strconv.Itoa(int(cfg.ConnConfig.Port))
}

// TestParallelWritersSettleExactlyOnce settles through several concurrent batches per
// poll (Writers 4 of 50 claims) a stream holding every claim twice, in separate polls
// and side by side in one poll, plus a voided claim and its retry: every claim is one
// row with one reserve entry, the voided one none, and the offsets end past everything.
func TestParallelWritersSettleExactlyOnce(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	const n = 600
	c := testenv.NewCampaign(t, rdb, pg, n+1)
	recs := c.Claim(t, n)
	voided := c.Claim(t, 1)[0]
	c.Void(t, voided)
	again := c.Reclaim(t, voided)
	recs = append(recs, again)
	c.MarkDurable(t, recs)
	kcl := testenv.Producer(t)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	// Each claim, then the voided record, then every claim again interleaved with
	// itself: polls of up to 200 records see both copies of many claims.
	stream := append([]claim.Record{}, recs...)
	stream = append(stream, voided)
	for i := range recs {
		stream = append(stream, recs[i], recs[len(recs)-1-i])
	}
	krs := testenv.Produce(t, kcl, topic, stream)

	r := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group, cfg: settle.Config{MaxBatch: 50, Writers: 4}})
	r.waitMetric("flashgate_settler_records_consumed_total", float64(len(stream)), 60*time.Second)
	testenv.Eventually(t, 30*time.Second, "offsets committed past every record", func() bool {
		return committedPast(t, group, krs)
	})
	checkBooks(t, c, c.ReadBooks(t, pg), n+1)
	ids := c.ClaimIDs(t, pg)
	if ids[voided.ClaimID] || !ids[again.ClaimID] {
		t.Fatalf("voided claim written: %v; its retry written: %v; want false, true", ids[voided.ClaimID], ids[again.ClaimID])
	}
	for name, want := range map[string]float64{
		"flashgate_settler_claims_written_total":     n + 1,
		"flashgate_settler_duplicates_ignored_total": 2 * (n + 1),
		"flashgate_settler_confirm_skipped_total":    1,
	} {
		if got := r.metric(name); got != want {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
	}
	if ob, inf := c.Leftovers(t); ob != 0 || inf != 0 {
		t.Fatalf("outbox %d, inflight %d; want 0, 0", ob, inf)
	}
}

// TestTrickleSettlesBelowFetchMinBytes: with the largest fetch minimum (1 MiB) a claim
// produced alone - a few hundred bytes, far below it - is still settled: the broker
// answers the fetch after PollWait with what it has, so a trickle is never held back
// waiting for volume. Twice, one claim at a time, each its own row, ledger entry and
// committed offset before the next is produced.
func TestTrickleSettlesBelowFetchMinBytes(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	c := testenv.NewCampaign(t, rdb, pg, 10)
	recs := c.Claim(t, 2)
	c.MarkDurable(t, recs)
	kcl := testenv.Producer(t)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	r := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group,
		cfg: settle.Config{FetchMinBytes: 1 << 20, PollWait: 100 * time.Millisecond}})
	testenv.Eventually(t, 30*time.Second, "the settler to join its group", func() bool { return r.ready() == nil })

	for i := range recs {
		krs := testenv.Produce(t, kcl, topic, recs[i:i+1])
		if n := len(krs[0].Value); n*100 > 1<<20 {
			t.Fatalf("a claim record is %d bytes; the test needs it far below the 1 MiB minimum", n)
		} else {
			t.Logf("claim record of %d bytes produced alone", n)
		}
		b := waitRows(t, c, pg, int64(i+1))
		checkBooks(t, c, b, int64(i+1))
		if !c.ClaimIDs(t, pg)[recs[i].ClaimID] {
			t.Fatalf("claim %s is not a row", recs[i].ClaimID)
		}
		testenv.Eventually(t, 10*time.Second, "the offset committed past the claim", func() bool {
			return committedPast(t, group, krs)
		})
	}
	if got := r.metric("flashgate_settler_claims_written_total"); got != 2 {
		t.Fatalf("claims written metric %v, want 2", got)
	}
}
