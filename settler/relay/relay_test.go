package relay_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
	"github.com/flashgate/flashgate/settler/relay"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// isolate keeps other packages' settlers (go test runs packages in parallel against the
// shared stack, and every settler's relay works every campaign in rkeys.Campaigns) away
// from c: it leaves the live set, and a lease one of them took in the moment it was
// there is dropped (its outbox was still empty). This test's relays call Campaign
// directly. Seen in CI: a foreign relay's lease made a pass here report Leased.
func isolate(t *testing.T, e *testenv.Env, campaign string) {
	t.Helper()
	ctx := testenv.Ctx(t, 5*time.Second)
	if err := e.RDB.SRem(ctx, rkeys.Campaigns, campaign).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.RDB.Del(ctx, "fg:{"+campaign+"}:relaylease").Err(); err != nil {
		t.Fatal(err)
	}
}

func newRelay(t *testing.T, e *testenv.Env, cfg relay.Config) *relay.Relay {
	t.Helper()
	r, err := relay.New(cfg, e.RDB, e.PG, testenv.Producer(t), quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rows(t *testing.T, pg *pgxpool.Pool, campaign string) (claims, reserves int64) {
	t.Helper()
	ctx := testenv.Ctx(t, 5*time.Second)
	err := pg.QueryRow(ctx, `SELECT (SELECT count(*) FROM claims WHERE campaign_id = $1),
		(SELECT count(*) FROM budget_ledger WHERE campaign_id = $1 AND kind = 'reserve')`, campaign).Scan(&claims, &reserves)
	if err != nil {
		t.Fatal(err)
	}
	return
}

func record(t *testing.T, e *testenv.Env, campaign, reqID string) string {
	t.Helper()
	v, err := e.RDB.Get(testenv.Ctx(t, 5*time.Second), rkeys.Request(campaign, reqID)).Result()
	if err != nil {
		t.Fatalf("record %s: %v", reqID, err)
	}
	return v
}

// A gateway that dies after the claim script and before the produce leaves the claim
// accepted in Redis ("A", in the outbox) and nowhere else; its client heard no 200. The
// relay voids it once it is older than the bound - never publishes it: the record is V,
// the unit and the budget are back, the outbox is empty, and no row is ever written.
func TestRelayVoidsClaimOfDeadGateway(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	c := e.Campaign(testenv.Spec{})
	isolate(t, e, c.ID)
	st := testenv.StartSettler(t, e.RDB, e.PG, c.ID)
	before, _ := e.RDB.HGetAll(ctx, rkeys.SKU(c.ID, "rp-50")).Result()

	a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, "rp-50", "u-1", "rq-1")
	if err != nil || a.Code != claim.CodeAccepted {
		t.Fatalf("claim: code %d, err %v", a.Code, err)
	}
	if got := record(t, e, c.ID, "rq-1"); got[0] != 'A' {
		t.Fatalf("record %q, want state A", got)
	}

	// Younger than the bound: left alone.
	r := newRelay(t, e, relay.Config{MinAge: time.Hour, RepublishEvery: time.Nanosecond})
	if s, err := r.Campaign(ctx, c.ID); err != nil || s.Scanned != 0 || s.Republished != 0 || s.Voided != 0 {
		t.Fatalf("young entry: stats %+v, err %v; want nothing scanned", s, err)
	}

	// The next relay stands in for it: the first one's lease on the campaign is dropped.
	if err := e.RDB.Del(ctx, "fg:{"+c.ID+"}:relaylease").Err(); err != nil {
		t.Fatal(err)
	}
	r = newRelay(t, e, relay.Config{MinAge: 100 * time.Millisecond, RepublishEvery: time.Nanosecond})
	time.Sleep(150 * time.Millisecond)
	s, err := r.Campaign(ctx, c.ID)
	if err != nil || s.Voided != 1 || s.Republished != 0 {
		t.Fatalf("stats %+v, err %v; want 1 voided, 0 republished", s, err)
	}
	if got := record(t, e, c.ID, "rq-1"); got[0] != 'V' {
		t.Fatalf("record after relay %q, want state V", got)
	}
	after, _ := e.RDB.HGetAll(ctx, rkeys.SKU(c.ID, "rp-50")).Result()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("SKU counters %v after the void, want them back at %v", after, before)
	}
	if n, _ := e.RDB.XLen(ctx, rkeys.Outbox(c.ID)).Result(); n != 0 {
		t.Fatalf("outbox %d after the void, want 0", n)
	}
	if n, _ := e.RDB.HLen(ctx, rkeys.Inflight(c.ID)).Result(); n != 0 {
		t.Fatalf("inflight %d after the void, want 0", n)
	}
	// A second pass finds nothing; nothing ever becomes a row.
	if s, err := r.Campaign(ctx, c.ID); err != nil || s.Voided != 0 || s.Republished != 0 {
		t.Fatalf("second pass %+v, %v; want nothing to do", s, err)
	}
	time.Sleep(500 * time.Millisecond)
	if n, _ := rows(t, e.PG, c.ID); n != 0 {
		t.Fatalf("rows %d for a claim whose client never heard 200, want 0", n)
	}
	if err := st.Err(); err != nil {
		t.Fatalf("settler: %v", err)
	}
}

// A claim acknowledged by the broker and marked durable (D: its client heard 200) whose
// record never reached Postgres (the topic lost it, or a settler skipped it) is
// republished by the relay once older than the bound, and the settler writes it: exactly
// one row and one reserve entry although the relay published it twice.
func TestRelayRepublishesDurableClaim(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	c := e.Campaign(testenv.Spec{})
	isolate(t, e, c.ID)
	st := testenv.NewSettler(t, e.RDB, e.PG, c.ID)

	a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, "rp-50", "u-1", "rq-1")
	if err != nil || a.Code != claim.CodeAccepted {
		t.Fatalf("claim: code %d, err %v", a.Code, err)
	}
	if err := scripts.Durable.Run(ctx, e.RDB, []string{rkeys.Request(c.ID, "rq-1")}, a.ClaimID).Err(); err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, e, relay.Config{MinAge: 100 * time.Millisecond, RepublishEvery: time.Nanosecond})
	time.Sleep(150 * time.Millisecond)
	for i := 0; i < 2; i++ {
		s, err := r.Campaign(ctx, c.ID)
		if err != nil || s.Republished != 1 || s.Voided != 0 {
			t.Fatalf("pass %d: stats %+v, err %v; want 1 republished", i, s, err)
		}
	}
	st.Start()
	testenv.Eventually(t, 20*time.Second, "the relayed claim becomes a row", func() bool {
		n, _ := rows(t, e.PG, c.ID)
		return n == 1
	})
	testenv.Eventually(t, 10*time.Second, "the settler consumed both copies", func() bool {
		n, _ := e.RDB.XLen(ctx, rkeys.Outbox(c.ID)).Result()
		return n == 0 && st.Err() == nil
	})
	time.Sleep(300 * time.Millisecond) // let a second copy land if it were to double anything
	if n, res := rows(t, e.PG, c.ID); n != 1 || res != 1 {
		t.Fatalf("rows %d, reserve entries %d; want 1 and 1", n, res)
	}
	var id string
	if err := e.PG.QueryRow(ctx, `SELECT claim_id FROM claims WHERE campaign_id = $1`, c.ID).Scan(&id); err != nil || id != a.ClaimID {
		t.Fatalf("row claim %s (err %v), want %s", id, err, a.ClaimID)
	}
	if got := record(t, e, c.ID, "rq-1"); got[0] != 'S' {
		t.Fatalf("record after settling %q, want state S", got)
	}
}

// Two settlers' relays over the same outbox during a long Postgres outage (nothing
// becomes a row): one campaign is worked by one relay at a time (the lease), and one
// pass publishes at most MaxPublishPerPass. Counted on a topic of the test's own: every
// durable claim is published exactly once per RepublishEvery, not once per relay.
func TestTwoRelaysShareTheWork(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	const n, perPass = 12, 5
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: n, Value: 50}}})
	isolate(t, e, c.ID)
	for i := 0; i < n; i++ {
		a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i))
		if err != nil || a.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: %+v %v", i, a, err)
		}
		if err := scripts.Durable.Run(ctx, e.RDB, []string{rkeys.Request(c.ID, fmt.Sprintf("rq-%d", i))}, a.ClaimID).Err(); err != nil {
			t.Fatal(err)
		}
	}
	topic := testenv.NewTopic(t)
	cfg := relay.Config{MinAge: 100 * time.Millisecond, Interval: 20 * time.Millisecond, RepublishEvery: time.Hour,
		MaxPublishPerPass: perPass, Topic: topic, Page: 3, MaxPerPass: 100}
	r1, r2 := newRelay(t, e, cfg), newRelay(t, e, cfg)
	time.Sleep(150 * time.Millisecond)

	var total [2]relay.Stats
	for pass := 0; pass < 6; pass++ {
		for i, r := range []*relay.Relay{r1, r2} {
			s, err := r.Campaign(ctx, c.ID)
			if err != nil {
				t.Fatalf("relay %d pass %d: %v", i+1, pass, err)
			}
			if s.Republished > perPass {
				t.Fatalf("relay %d pass %d published %d, more than MaxPublishPerPass %d", i+1, pass, s.Republished, perPass)
			}
			total[i].Republished += s.Republished
			total[i].Leased += s.Leased
		}
	}
	t.Logf("relay 1: %+v, relay 2: %+v", total[0], total[1])
	if total[0].Republished != n || total[1].Republished != 0 || total[1].Leased != 6 {
		t.Fatalf("relay 1 published %d, relay 2 published %d (leased out %d passes); want %d, 0 and 6",
			total[0].Republished, total[1].Republished, total[1].Leased, n)
	}
	if got := countRecords(t, topic, n); got != n {
		t.Fatalf("%d records on the topic, want exactly %d (one per durable claim)", got, n)
	}
}

// The relay removes only what needs no publishing: entries whose claim is a row (the
// settler committed but its cleanup was lost) and entries of voided claims. Each case is
// checked on the outbox, the inflight hash and the counters.
func TestRelayTrimsOnlyCommittedOrVoided(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	c := e.Campaign(testenv.Spec{})
	isolate(t, e, c.ID)
	var acc [3]testenv.Accepted
	for i := range acc {
		var err error
		acc[i], err = testenv.ScriptClaim(ctx, e.RDB, c.ID, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i))
		if err != nil || acc[i].Code != claim.CodeAccepted {
			t.Fatalf("claim %d: %+v %v", i, acc[i], err)
		}
	}
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != 3 {
		t.Fatalf("outbox: %d records, err %v", len(recs), err)
	}
	// 0: committed, cleanup lost (the outbox entry stays).
	committed := recs[0]
	committed.OutboxID = "" // the settler's XDEL never happens
	if _, err := testenv.Write(ctx, e.RDB, e.PG, []claim.Record{committed}, -1, nil); err != nil {
		t.Fatal(err)
	}
	// 1: voided by its gateway, but the entry is still there (a lost XDEL).
	rec1 := record(t, e, c.ID, "rq-1")
	if err := e.RDB.Set(ctx, rkeys.Request(c.ID, "rq-1"), "V"+rec1[1:], redis.KeepTTL).Err(); err != nil {
		t.Fatal(err)
	}
	// 2: acknowledged (D), never settled: must be published, not removed.
	if err := scripts.Durable.Run(ctx, e.RDB, []string{rkeys.Request(c.ID, "rq-2")}, acc[2].ClaimID).Err(); err != nil {
		t.Fatal(err)
	}
	before, _ := e.RDB.HGetAll(ctx, rkeys.SKU(c.ID, "rp-50")).Result()

	r := newRelay(t, e, relay.Config{MinAge: 100 * time.Millisecond, RepublishEvery: time.Hour})
	time.Sleep(150 * time.Millisecond)
	s, err := r.Campaign(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Trimmed != 1 || s.Dropped != 1 || s.Republished != 1 {
		t.Fatalf("stats %+v; want 1 trimmed, 1 dropped, 1 republished", s)
	}
	// Only the unpublished claim may remain (another settler on the shared dev stack may
	// already have settled the copy the relay published).
	msgs, _ := e.RDB.XRange(ctx, rkeys.Outbox(c.ID), "-", "+").Result()
	if len(msgs) > 1 || (len(msgs) == 1 && msgs[0].Values["c"] != acc[2].ClaimID) {
		t.Fatalf("outbox after relay %v; want at most %s", msgs, acc[2].ClaimID)
	}
	after, _ := e.RDB.HGetAll(ctx, rkeys.SKU(c.ID, "rp-50")).Result()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("the relay changed counters: %v → %v", before, after)
	}
	// Published recently: a second pass leaves it alone until RepublishEvery passes.
	if s, err := r.Campaign(ctx, c.ID); err != nil || s.Republished != 0 || s.Waiting+s.Trimmed != len(msgs) {
		t.Fatalf("second pass %+v, %v; want it waiting (or trimmed once settled)", s, err)
	}
}

// The outbox is bounded by the stock: with the settler down for the whole sale it holds
// exactly the accepted claims (never more than the stock, whatever the demand), within
// EntryBytes each at the longest ids; once the relay and the settler run it drains to
// empty, and every accepted claim is a row.
func TestOutboxBound(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 90*time.Second)
	const stock, users = 40, 60
	// The longest ids the API allows make the largest entries.
	long := func(prefix string, i int) string {
		s := fmt.Sprintf("%s-%d-", prefix, i)
		return s + strings.Repeat("x", 64-len(s))
	}
	id := testenv.ID(t, "cmp")
	id += "-" + strings.Repeat("c", 64-len(id)-1)
	c := e.Campaign(testenv.Spec{ID: id, SKUs: []testenv.SKU{{SKU: "rp-50", Stock: stock, Value: 50}}})

	accepted := 0
	for i := 0; i < users; i++ {
		a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, "rp-50", long("u", i), long("rq", i))
		if err != nil {
			t.Fatal(err)
		}
		if a.Code == claim.CodeAccepted {
			accepted++
		}
		n, err := e.RDB.XLen(ctx, rkeys.Outbox(c.ID)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n > stock || n != int64(accepted) {
			t.Fatalf("after %d claims: outbox %d, accepted %d, stock %d", i+1, n, accepted, stock)
		}
	}
	if accepted != stock {
		t.Fatalf("accepted %d of %d, want the whole stock %d", accepted, users, stock)
	}
	// Every claim was acknowledged and answered 200 (D); none was settled.
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if err := scripts.Durable.Run(ctx, e.RDB, []string{rkeys.Request(c.ID, rec.RequestID)}, rec.ClaimID).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b := relay.OutboxBound(stock, 0, 0, relay.Config{})
	if b.Entries != stock || !b.Ceiling {
		t.Fatalf("OutboxBound(stock %d, unknown rate) = %+v; want the stock ceiling", stock, b)
	}
	mem, err := e.RDB.MemoryUsage(ctx, rkeys.Outbox(c.ID), 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("outbox at the ceiling: %d entries, %d bytes (%d per entry; EntryBytes %d)", stock, mem, mem/stock, relay.EntryBytes)
	if mem > b.Bytes {
		t.Fatalf("outbox takes %d bytes, more than the bound %d (%d entries × %d)", mem, b.Bytes, b.Entries, relay.EntryBytes)
	}

	st := testenv.StartSettler(t, e.RDB, e.PG, c.ID)
	r := newRelay(t, e, relay.Config{MinAge: 100 * time.Millisecond, Interval: 50 * time.Millisecond})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	testenv.Eventually(t, 30*time.Second, "the outbox drains", func() bool {
		n, _ := e.RDB.XLen(ctx, rkeys.Outbox(c.ID)).Result()
		return n == 0
	})
	cancel()
	<-done
	if n, res := rows(t, e.PG, c.ID); n != stock || res != stock {
		t.Fatalf("rows %d, reserves %d; want %d each", n, res, stock)
	}
	if err := st.Err(); err != nil {
		t.Fatalf("settler: %v", err)
	}
}

func TestOutboxBoundFormula(t *testing.T) {
	cfg := relay.Config{MinAge: 15 * time.Second, Interval: time.Second}
	tests := []struct {
		name        string
		stock       int64
		rate        float64
		lag         time.Duration
		wantEntries int64
		wantCeiling bool
	}{
		{"unknown rate: the stock", 1000, 0, time.Second, 1000, true},
		{"rate-limited", 1_000_000, 50_000, time.Second, 50_000 * 17, false},
		{"stock-limited", 10_000, 50_000, time.Second, 10_000, true},
		{"negative stock", -5, 0, 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := relay.OutboxBound(tc.stock, tc.rate, tc.lag, cfg)
			if b.Entries != tc.wantEntries || b.Ceiling != tc.wantCeiling || b.Bytes != tc.wantEntries*relay.EntryBytes {
				t.Fatalf("got %+v; want %d entries (ceiling %v)", b, tc.wantEntries, tc.wantCeiling)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	e := testenv.New(t)
	kcl := testenv.Producer(t)
	tests := []struct {
		cfg  relay.Config
		want string
	}{
		{relay.Config{MinAge: time.Millisecond}, "MinAge"},
		{relay.Config{Interval: time.Microsecond}, "Interval"},
		{relay.Config{Page: -1}, "Page"},
		{relay.Config{Page: 100, MaxPerPass: 10}, "MaxPerPass"},
		{relay.Config{RepublishEvery: -time.Second}, "RepublishEvery"},
		{relay.Config{ProduceTimeout: time.Millisecond}, "ProduceTimeout"},
	}
	for _, tc := range tests {
		if _, err := relay.New(tc.cfg, e.RDB, e.PG, kcl, quiet, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if _, err := relay.New(relay.Config{}, nil, e.PG, kcl, quiet, nil); err == nil {
		t.Error("New without Redis: no error")
	}
	_ = kafkaopt.ClaimsTopic
}

// countRecords reads topic from its start and returns how many records it holds (each
// must be keyed by its claim id): once
// want have arrived it keeps reading a little longer, so a surplus would be counted.
func countRecords(t *testing.T, topic string, want int) int {
	t.Helper()
	kcl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer kcl.Close()
	got := 0
	deadline := time.Now().Add(20 * time.Second)
	var extra time.Time
	for time.Now().Before(deadline) && (extra.IsZero() || time.Now().Before(extra)) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := kcl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			got++
			// The relay keys a republished claim as the gateway does (by claim id), so
			// both copies land in one partition, in order.
			if rec, err := claim.Decode(r.Value); err != nil || string(r.Key) != rec.ClaimID {
				t.Errorf("record keyed %q: want its claim id (%v)", r.Key, err)
			}
		})
		if got >= want && extra.IsZero() {
			extra = time.Now().Add(time.Second)
		}
	}
	return got
}
