package claimer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type env struct {
	t   testing.TB
	rdb *redis.Client
	pg  *pgxpool.Pool
	cat *catalog.Catalog
}

func newEnv(t testing.TB) *env {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	return &env{t: t, rdb: rdb, pg: pg, cat: catalog.New(pg, rdb)}
}

// claimerOn starts a claimer whose producer talks to brokers.
func (e *env) claimerOn(brokers []string, delivery time.Duration) *claimer.Claimer {
	e.t.Helper()
	kcl, err := kgo.NewClient(kafkaopt.Producer(brokers, time.Millisecond, delivery)...)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := claimer.New(claimer.Config{BatchWait: 100 * time.Microsecond}, e.rdb, kcl, nil, quiet)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close(); kcl.Close() })
	return c
}

func (e *env) claimer() *claimer.Claimer {
	testenv.RequireBroker(e.t)
	return e.claimerOn(testenv.Brokers(), 10*time.Second)
}

type campaignSpec struct {
	id         string        // default: a fresh one
	start, end time.Duration // relative to now
	limit      int64
	budget     int64
	segment    string
	skus       string // JSON array
}

// campaign creates a campaign through the kit's builder, with this package's defaults:
// a business line of its own with a budget of 1e6 (bl ""), opening now for an hour,
// one claim per user, a budget of 1e5, three rp-50 at 50.
func (e *env) campaign(bl string, s campaignSpec) string {
	e.t.Helper()
	if s.skus == "" {
		s.skus = `[{"sku":"rp-50","stock":3,"value":50}]`
	}
	var skus []testenv.SKU
	if err := json.Unmarshal([]byte(s.skus), &skus); err != nil {
		e.t.Fatalf("campaign skus %s: %v", s.skus, err)
	}
	if s.budget == 0 {
		s.budget = 100_000
	}
	if s.start == 0 {
		s.start = -time.Nanosecond // now (the kit's 0 is a minute ago)
	}
	kit := &testenv.Env{T: e.t, RDB: e.rdb, Cat: e.cat}
	return kit.Campaign(testenv.Spec{ID: s.id, BusinessLine: bl, BLBudget: 1_000_000, Start: s.start, End: s.end,
		PerUser: s.limit, Budget: s.budget, Segment: s.segment, SKUs: skus}).ID
}

func req(campaign, sku, user, reqID string) *claimer.Request {
	return &claimer.Request{RequestID: reqID, CampaignID: campaign, SKU: sku, UserID: user, DeviceID: "d-" + user, IP: "127.0.0.1"}
}

// doAll makes n claims at once, the i-th built by mk, and returns them with their errors.
func (e *env) doAll(c *claimer.Claimer, n int, mk func(i int) *claimer.Request) ([]*claimer.Request, []error) {
	reqs, errs := make([]*claimer.Request, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range reqs {
		reqs[i] = mk(i)
		wg.Go(func() { errs[i] = e.do(c, reqs[i]) })
	}
	wg.Wait()
	return reqs, errs
}

func (e *env) do(c *claimer.Claimer, r *claimer.Request) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Do(ctx, r)
}

func reason(code int) string { return claim.ReasonOf(code) }

// snapshot is every counter a claim can touch in a campaign.
func (e *env) snapshot(campaign string) string {
	ctx := context.Background()
	var b strings.Builder
	for _, k := range []string{rkeys.Meta(campaign), rkeys.SKU(campaign, "rp-50"), rkeys.Users(campaign), rkeys.Inflight(campaign)} {
		m, err := e.rdb.HGetAll(ctx, k).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		j, _ := json.Marshal(m)
		b.WriteString(k + "=" + string(j) + "\n")
	}
	n, err := e.rdb.XLen(ctx, rkeys.Outbox(campaign)).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(&b, "outbox=%d", n)
	return b.String()
}

// decision is what a claim decision can change in a campaign, apart from what settlement
// takes away concurrently: a settler of any test sharing the broker may settle a claim
// accepted earlier and drop its inflight entry and outbox record at any moment.
type decision struct {
	counters string            // meta, the rp-50 SKU, the per-user counts
	inflight map[string]string // claim_id -> request_id
	added    int64             // the outbox's entries-added: trimming never lowers it
}

func (e *env) decision(campaign string) decision {
	ctx := context.Background()
	var b strings.Builder
	for _, k := range []string{rkeys.Meta(campaign), rkeys.SKU(campaign, "rp-50"), rkeys.Users(campaign)} {
		j, _ := json.Marshal(e.rdb.HGetAll(ctx, k).Val())
		b.WriteString(k + "=" + string(j) + "\n")
	}
	d := decision{counters: b.String(), inflight: e.rdb.HGetAll(ctx, rkeys.Inflight(campaign)).Val()}
	if info, err := e.rdb.XInfoStream(ctx, rkeys.Outbox(campaign)).Result(); err == nil {
		d.added = info.EntriesAdded
	} else if !strings.Contains(err.Error(), "no such key") {
		e.t.Fatal(err)
	}
	return d
}

// changes says how after differs from before, or "" when it does not: the counters are
// the same, no outbox record was added, and every inflight entry is as it was, except
// ones gone because their claim is a row in Postgres (settled elsewhere, not undone).
func (e *env) changes(before, after decision) string {
	var diff []string
	if before.counters != after.counters {
		diff = append(diff, "counters:\n"+before.counters+"->\n"+after.counters)
	}
	if before.added != after.added {
		diff = append(diff, fmt.Sprintf("outbox entries added %d -> %d", before.added, after.added))
	}
	for id, rid := range after.inflight {
		if before.inflight[id] != rid {
			diff = append(diff, fmt.Sprintf("inflight %s=%s is new", id, rid))
		}
	}
	for id := range before.inflight {
		if _, ok := after.inflight[id]; ok {
			continue
		}
		var n int
		if err := e.pg.QueryRow(context.Background(), `SELECT count(*) FROM claims WHERE claim_id = $1`, id).Scan(&n); err != nil {
			e.t.Fatal(err)
		}
		if n == 0 {
			diff = append(diff, fmt.Sprintf("inflight %s left without a row in Postgres", id))
		}
	}
	return strings.Join(diff, "\n")
}

// Every business rejection of the claim script, decided in Redis, with nothing taken.
func TestScriptRejections(t *testing.T) {
	e := newEnv(t)
	c := e.claimer()
	ctx := context.Background()

	segName := testenv.ID(t, "seg")
	if _, err := e.cat.PutSegment(ctx, segName, []byte("member-1\nmember-2\n")); err != nil {
		t.Fatal(err)
	}
	notYet := e.campaign("", campaignSpec{start: time.Hour, end: 2 * time.Hour})
	over := e.campaign("", campaignSpec{start: -2 * time.Hour, end: -time.Hour})
	paused := e.campaign("", campaignSpec{start: -time.Minute})
	if err := e.cat.SetPaused(ctx, paused, true); err != nil {
		t.Fatal(err)
	}
	seg := e.campaign("", campaignSpec{start: -time.Minute, segment: segName})
	open := e.campaign("", campaignSpec{start: -time.Minute, limit: 2})

	cases := []struct {
		name string
		r    *claimer.Request
		want int
	}{
		{"not started", req(notYet, "rp-50", "u1", "r1"), claim.CodeNotStarted},
		{"ended", req(over, "rp-50", "u1", "r1"), claim.CodeEnded},
		{"paused", req(paused, "rp-50", "u1", "r1"), claim.CodePaused},
		{"not in segment", req(seg, "rp-50", "outsider", "r1"), claim.CodeNotEligible},
		{"segment member", req(seg, "rp-50", "member-1", "r2"), claim.CodeAccepted},
		{"unknown campaign", req(testenv.ID(t, "nope"), "rp-50", "u1", "r1"), claim.CodeUnknownCampaign},
		{"unknown sku", req(open, "rp-99", "u1", "r1"), claim.CodeUnknownSKU},
		{"user first", req(open, "rp-50", "u1", "r2"), claim.CodeAccepted},
		{"user second", req(open, "rp-50", "u1", "r3"), claim.CodeAccepted},
		{"user over limit", req(open, "rp-50", "u1", "r4"), claim.CodeUserLimit},
		{"last unit", req(open, "rp-50", "u2", "r5"), claim.CodeAccepted},
		{"sold out", req(open, "rp-50", "u3", "r6"), claim.CodeSoldOut},
	}
	for _, tc := range cases {
		rejection := tc.want != claim.CodeAccepted && tc.want != claim.CodeUnknownCampaign
		var before decision
		if rejection {
			before = e.decision(tc.r.CampaignID)
		}
		if err := e.do(c, tc.r); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.r.Code != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, reason(tc.r.Code), reason(tc.want))
		}
		if rejection {
			if d := e.changes(before, e.decision(tc.r.CampaignID)); d != "" {
				t.Errorf("%s: a rejection changed state:\n%s", tc.name, d)
			}
		}
	}

	// A retried rejection gets the same rejection back, marked replayed, even once the
	// reason no longer holds for a new request - except sold_out, which is re-derived
	// from the stock (not remembered, DESIGN.md "Which rejections are remembered"):
	// the same answer while sold out, not a replay, no record left.
	r := req(open, "rp-50", "u3", "r6")
	if err := e.do(c, r); err != nil || r.Code != claim.CodeSoldOut || r.Replayed {
		t.Errorf("retry of a sold_out request: code %s replayed %v err %v; want sold_out decided again", reason(r.Code), r.Replayed, err)
	}
	if n := e.rdb.Exists(context.Background(), rkeys.Request(open, "r6")).Val(); n != 0 {
		t.Errorf("sold_out left a record for its request_id")
	}
	r = req(open, "rp-50", "u1", "r4")
	if err := e.do(c, r); err != nil || r.Code != claim.CodeUserLimit || !r.Replayed {
		t.Errorf("retry of a user_limit request: code %s replayed %v err %v; want user_limit replayed", reason(r.Code), r.Replayed, err)
	}
}

// The same request_id with a different body is a key reuse; with the same body it is a
// replay of the same claim.
func TestIdempotency(t *testing.T) {
	e := newEnv(t)
	c := e.claimer()
	cmp := e.campaign("", campaignSpec{start: -time.Minute, limit: 3})

	first := req(cmp, "rp-50", "u1", "same")
	if err := e.do(c, first); err != nil || first.Code != claim.CodeAccepted {
		t.Fatalf("first: %s %v", reason(first.Code), err)
	}
	// The durable mark is written asynchronously after the ack; until then a retry is
	// told to come back (503), never answered with a claim that could still be voided.
	var again *claimer.Request
	testenv.Eventually(t, 10*time.Second, "the retry is answered with the claim", func() bool {
		again = req(cmp, "rp-50", "u1", "same")
		err := e.do(c, again)
		return err == nil
	})
	if again.Code != claim.CodeAccepted || !again.Replayed || again.ClaimID != first.ClaimID {
		t.Fatalf("retry: %s replayed=%v claim %q; want accepted, replayed, claim %q", reason(again.Code), again.Replayed, again.ClaimID, first.ClaimID)
	}
	for _, other := range []*claimer.Request{req(cmp, "rp-51", "u1", "same"), req(cmp, "rp-50", "u2", "same")} {
		other.DeviceID = "d-u1"
		if err := e.do(c, other); err != nil || other.Code != claim.CodeKeyReuse {
			t.Errorf("reuse %s/%s: %s %v; want key reuse", other.SKU, other.UserID, reason(other.Code), err)
		}
	}
	if taken := e.rdb.HGet(context.Background(), rkeys.SKU(cmp, "rp-50"), "taken").Val(); taken != "1" {
		t.Errorf("taken %s, want 1", taken)
	}
}

// A produce that cannot reach a broker fails within the delivery timeout, and void.lua
// gives back exactly what the claim took; the same request_id is then decided anew.
func TestProduceFailureVoids(t *testing.T) {
	e := newEnv(t)
	cmp := e.campaign("", campaignSpec{start: -time.Minute})
	dead := e.claimerOn([]string{fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}, 1500*time.Millisecond)
	before := e.snapshot(cmp)

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.do(dead, req(cmp, "rp-50", fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, claimer.ErrUnavailable) {
			t.Errorf("claim %d with no broker: err %v, want ErrUnavailable", i, err)
		}
	}
	if after := e.snapshot(cmp); after != before {
		t.Fatalf("failed produces left state behind:\nbefore %s\nafter  %s", before, after)
	}
	rec := e.rdb.Get(context.Background(), rkeys.Request(cmp, "r0")).Val()
	if !strings.HasPrefix(rec, "V\t") {
		t.Errorf("idempotency record after the void: %q, want state V", rec)
	}

	live := e.claimer()
	r := req(cmp, "rp-50", "u0", "r0")
	if err := e.do(live, r); err != nil || r.Code != claim.CodeAccepted || r.Replayed {
		t.Fatalf("retry with a broker: %s replayed=%v err %v; want a fresh accept", reason(r.Code), r.Replayed, err)
	}
	if stock := e.rdb.HGet(context.Background(), rkeys.SKU(cmp, "rp-50"), "stock").Val(); stock != "2" {
		t.Errorf("stock %s, want 2", stock)
	}
}

// While the first attempt's produce is still in flight (state A), a retry of the same
// request_id waits for that attempt's outcome (the double tap, issue 14) instead of
// hearing 503: here the first attempt's broker is dead, so it is voided and answered
// 503, and the waiting retry is then decided anew and accepted with a claim of its own.
// With InFlightWait negative the retry is answered 503 in_flight at once.
func TestRetryWhileInFlight(t *testing.T) {
	e := newEnv(t)
	cmp := e.campaign("", campaignSpec{start: -time.Minute})
	// A settler's outbox relay running on the shared stack could void the accepted
	// claim past its bound; relays find campaigns through this set.
	if err := e.rdb.SRem(context.Background(), rkeys.Campaigns, cmp).Err(); err != nil {
		t.Fatal(err)
	}
	dead := []string{fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
	slow := e.claimerOn(dead, 3*time.Second)
	live := e.claimer()
	impatient := e.claimerWith(testenv.NewKfake(t).Brokers(), 10*time.Second, claimer.Config{InFlightWait: -1}, nil)

	done := make(chan error, 1)
	first := req(cmp, "rp-50", "u1", "r1")
	go func() { done <- e.do(slow, first) }()
	testenv.Eventually(t, 5*time.Second, "the first attempt is accepted in Redis", func() bool {
		return strings.HasPrefix(e.rdb.Get(context.Background(), rkeys.Request(cmp, "r1")).Val(), "A\t")
	})
	r := req(cmp, "rp-50", "u1", "r1")
	if err := e.do(impatient, r); !errors.Is(err, claimer.ErrUnavailable) || r.Code != claim.CodeInFlight {
		t.Errorf("impatient retry while in flight: code %s err %v; want ErrUnavailable (in flight) at once", reason(r.Code), err)
	}
	r = req(cmp, "rp-50", "u1", "r1")
	start := time.Now()
	if err := e.do(live, r); err != nil || r.Code != claim.CodeAccepted || r.Replayed {
		t.Errorf("retry while in flight: code %s replayed %v err %v; want it accepted anew once the first is voided", reason(r.Code), r.Replayed, err)
	}
	t.Logf("the retry waited %s for the first attempt", time.Since(start))
	if err := <-done; !errors.Is(err, claimer.ErrUnavailable) {
		t.Errorf("first attempt: %v, want ErrUnavailable after its produce failed", err)
	}
	if r.ClaimID == first.ClaimID {
		t.Errorf("the retry got the voided claim %s", r.ClaimID)
	}
	if taken := e.rdb.HGet(context.Background(), rkeys.SKU(cmp, "rp-50"), "taken").Val(); taken != "1" {
		t.Errorf("taken %s, want 1 (the first voided, the retry's taken)", taken)
	}
}

// The double tap when the first attempt succeeds: its 200 waits for its durable mark
// (a MarkLinger of 1s holds it in A), and a retry on another gateway meanwhile waits
// too and is answered 200 with the same claim, not 503.
func TestDoubleTapGetsTheFirstAnswer(t *testing.T) {
	e := newEnv(t)
	testenv.RequireBroker(t)
	cmp := e.campaign("", campaignSpec{start: -time.Minute})
	lingering := e.claimerWith(testenv.NewKfake(t).Brokers(), 10*time.Second, claimer.Config{MarkLinger: time.Second}, nil)
	other := e.claimer()

	done := make(chan error, 1)
	first := req(cmp, "rp-50", "u1", "r1")
	go func() { done <- e.do(lingering, first) }()
	testenv.Eventually(t, 5*time.Second, "the first attempt is accepted in Redis", func() bool {
		return strings.HasPrefix(e.rdb.Get(context.Background(), rkeys.Request(cmp, "r1")).Val(), "A\t")
	})
	r := req(cmp, "rp-50", "u1", "r1")
	if err := e.do(other, r); err != nil || r.Code != claim.CodeAccepted || !r.Replayed {
		t.Fatalf("second tap: code %s replayed %v err %v; want 200 replaying the first", reason(r.Code), r.Replayed, err)
	}
	if err := <-done; err != nil || first.Code != claim.CodeAccepted {
		t.Fatalf("first tap: %s %v", reason(first.Code), err)
	}
	if r.ClaimID != first.ClaimID {
		t.Fatalf("second tap claim %s, first %s; want the same", r.ClaimID, first.ClaimID)
	}
	if taken := e.rdb.HGet(context.Background(), rkeys.SKU(cmp, "rp-50"), "taken").Val(); taken != "1" {
		t.Errorf("taken %s, want 1", taken)
	}
}

// Config errors name the field.
func TestConfigValidation(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	kcl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer kcl.Close()
	for _, tc := range []struct {
		cfg  claimer.Config
		want string
	}{
		{claimer.Config{MaxBatch: 1000}, "MaxBatch"},
		{claimer.Config{BatchWait: time.Second}, "BatchWait"},
		{claimer.Config{MarkLinger: 2 * time.Second}, "MarkLinger"},
		{claimer.Config{MarkLinger: -time.Millisecond}, "MarkLinger"},
		{claimer.Config{Workers: 1000}, "Workers"},
		{claimer.Config{MaxBatch: 64, QueueSize: 10}, "QueueSize"},
		{claimer.Config{RejectTTL: time.Millisecond}, "RejectTTL"},
	} {
		_, err := claimer.New(tc.cfg, rdb, kcl, nil, quiet)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %+v: err %v, want one naming %s", tc.cfg, err, tc.want)
		}
	}
}

// Concurrent claims share one script call: with one worker and a batch wait, claims
// that arrive together are decided by a single claim.lua call (the batch-size histogram
// sees one batch of all of them), and each still gets its own answer.
func TestConcurrentClaimsShareOneScriptCall(t *testing.T) {
	e := newEnv(t)
	testenv.RequireBroker(t)
	reg := prometheus.NewRegistry()
	const n = 4
	c := e.claimerWith(testenv.NewKfake(t).Brokers(), 10*time.Second,
		claimer.Config{Workers: 1, MaxBatch: n, BatchWait: 50 * time.Millisecond}, claimer.NewMetrics(reg))
	camp := e.campaign("", campaignSpec{skus: `[{"sku":"rp-50","stock":10,"value":50}]`})
	batches := func() (calls uint64, claims float64) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "flashgate_gateway_script_batch_claims" {
				h := mf.GetMetric()[0].GetHistogram()
				return h.GetSampleCount(), h.GetSampleSum()
			}
		}
		t.Fatal("no batch-size histogram")
		return 0, 0
	}
	// A first claim alone warms the campaign's route, so the concurrent ones below reach
	// the queue together; alone, it waited at most BatchWait and went as a batch of one.
	if err := e.do(c, req(camp, "rp-50", "warm", "r-warm")); err != nil {
		t.Fatal(err)
	}
	if calls, claims := batches(); calls != 1 || claims != 1 {
		t.Fatalf("a lone claim: %d calls for %.0f claims", calls, claims)
	}
	reqs, errs := e.doAll(c, n, func(i int) *claimer.Request { return req(camp, "rp-50", fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i)) })
	ids := map[string]bool{}
	for i := range n {
		if errs[i] != nil || reqs[i].Code != claim.CodeAccepted {
			t.Fatalf("claim %d: err %v, %s", i, errs[i], reason(reqs[i].Code))
		}
		ids[reqs[i].ClaimID] = true
	}
	if len(ids) != n {
		t.Fatalf("%d distinct claim ids for %d claims", len(ids), n)
	}
	if calls, claims := batches(); calls != 2 || claims != n+1 {
		t.Fatalf("%d more script calls decided %.0f claims; want 1 call for all %d", calls-1, claims-1, n)
	}
}

// Durable marks of claims accepted close together share one durable.lua call (the
// first waits MarkLinger for the others), and every one of them is written: each
// claim's retry is then answered 200 with its claim.
func TestDurableMarksShareOneCall(t *testing.T) {
	e := newEnv(t)
	testenv.RequireBroker(t)
	reg := prometheus.NewRegistry()
	c := e.claimerWith(testenv.NewKfake(t).Brokers(), 10*time.Second, claimer.Config{MarkLinger: time.Second}, claimer.NewMetrics(reg))
	camp := e.campaign("", campaignSpec{skus: `[{"sku":"rp-50","stock":10,"value":50}]`})
	const n = 3
	reqs, errs := e.doAll(c, n, func(i int) *claimer.Request { return req(camp, "rp-50", fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i)) })
	for i := range n {
		if errs[i] != nil || reqs[i].Code != claim.CodeAccepted {
			t.Fatalf("claim %d: err %v, %s", i, errs[i], reason(reqs[i].Code))
		}
	}
	for i := range n {
		var again *claimer.Request
		testenv.Eventually(t, 10*time.Second, "the retry is answered with the claim", func() bool {
			again = req(camp, "rp-50", fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i))
			return e.do(c, again) == nil
		})
		if !again.Replayed || again.ClaimID != reqs[i].ClaimID {
			t.Fatalf("retry %d: replayed=%v claim %q; want claim %q", i, again.Replayed, again.ClaimID, reqs[i].ClaimID)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "flashgate_gateway_durable_mark_batch" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() != n {
				t.Fatalf("%d durable.lua calls wrote %.0f marks; want 1 call for all %d", h.GetSampleCount(), h.GetSampleSum(), n)
			}
			return
		}
	}
	t.Fatal("no durable mark histogram")
}

// Close writes the durable marks still waiting out MarkLinger: the accepted claim's
// record is "D" (durable) once Close returns, not left "A" for a retry to meet as
// in_flight.
func TestCloseWritesWaitingMarks(t *testing.T) {
	e := newEnv(t)
	testenv.RequireBroker(t)
	c := e.claimerWith(testenv.NewKfake(t).Brokers(), 10*time.Second, claimer.Config{MarkLinger: time.Second}, nil)
	camp := e.campaign("", campaignSpec{})
	r := req(camp, "rp-50", "u1", "r-close")
	if err := e.do(c, r); err != nil || r.Code != claim.CodeAccepted {
		t.Fatalf("claim: %s %v", reason(r.Code), err)
	}
	c.Close() // well inside the 1 s linger
	rec, err := e.rdb.Get(context.Background(), rkeys.Request(camp, "r-close")).Result()
	if err != nil || !strings.HasPrefix(rec, "D\t"+r.ClaimID+"\t") {
		t.Fatalf("record after Close: %q (%v); want it marked durable (D)", rec, err)
	}
}
