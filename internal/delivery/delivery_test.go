package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashgate/flashgate/internal/delivery"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestDelivery runs the deliverer's tests on a private Postgres of their own: the
// settlers that other packages' tests start act on every delivery in the shared
// database and would call (and count against) these tests' fulfilment servers.
func TestDelivery(t *testing.T) {
	pg := testenv.StartPG(t).Pool(16)
	for _, c := range []struct {
		name string
		test func(*testing.T, *pgxpool.Pool)
	}{
		{"TriggerMakesOneDeliveryPerPrizeAndNoneForOthers", triggerMakesOneDeliveryPerPrize},
		{"FailuresAreRetriedAndEachPrizeIsFulfilledOnce", failuresAreRetried},
		{"DeadLetterAndAdminRetry", deadLetterAndAdminRetry},
		{"DelivererDyingMidCallLosesNothing", delivererDyingMidCall},
		{"TwoDeliverersShareTheWork", twoDeliverersShareTheWork},
	} {
		t.Run(c.name, func(t *testing.T) { c.test(t, pg) })
	}
}

// fulfilment is a real HTTP fulfilment server on loopback that behaves like a careful
// one: it acts once per Idempotency-Key and answers a repeat with the first answer. It
// records every call, the calls in flight per key, and what it fulfilled.
type fulfilment struct {
	mu        sync.Mutex
	calls     map[string]int
	fulfilled map[string]int
	inflight  map[string]int
	overlap   atomic.Int32 // calls that arrived while another call of the same key was in flight
	// behave decides each call's fate: "ok", "500", "hang" (beyond the caller's timeout).
	behave func(key string, call int) string
	srv    *httptest.Server
}

func newFulfilment(t *testing.T, behave func(key string, call int) string) *fulfilment {
	f := &fulfilment{calls: map[string]int{}, fulfilled: map[string]int{}, inflight: map[string]int{}, behave: behave}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		// Read the body first: the server then watches the connection, and a caller
		// that gives up ends the call here too (r.Context()).
		if _, err := io.ReadAll(r.Body); err != nil {
			return
		}
		f.mu.Lock()
		f.calls[key]++
		n := f.calls[key]
		if f.inflight[key] > 0 {
			f.overlap.Add(1)
		}
		f.inflight[key]++
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.inflight[key]--; f.mu.Unlock() }()
		switch f.behave(key, n) {
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "hang":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			f.mu.Lock()
			if f.fulfilled[key] == 0 { // the idempotent act
				f.fulfilled[key] = 1
			}
			f.mu.Unlock()
			w.WriteHeader(http.StatusOK)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fulfilment) stats(key string) (calls, fulfilled int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[key], f.fulfilled[key]
}

// prizes creates a campaign with one webhook SKU and one without, and n settled claims
// of the webhook SKU plus one of the other (the trigger makes the deliveries rows).
func prizes(t *testing.T, pg *pgxpool.Pool, webhook string, n int) (campaign string, claims []string, plain string) {
	t.Helper()
	ctx := context.Background()
	id := fmt.Sprintf("dlv%d", time.Now().UnixNano())
	campaign, bl := "c-"+id, "bl-"+id
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pg.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO business_lines (id, budget) VALUES ($1, 1000000)`, bl)
	exec(`INSERT INTO campaigns (id, name, business_line, starts_at, ends_at, per_user_limit, budget, voucher_ttl_ms)
	      VALUES ($1, 'delivery test', $2, now() - interval '1 hour', now() + interval '1 hour', 1, 100000, 86400000)`, campaign, bl)
	exec(`INSERT INTO campaign_skus (campaign_id, sku, stock, value, delivery_webhook) VALUES ($1, 'phone', $2, 1000, $3)`, campaign, n, webhook)
	exec(`INSERT INTO campaign_skus (campaign_id, sku, stock, value) VALUES ($1, 'thanks', 10, 1)`, campaign)
	ids := make([]string, 0, n+1)
	skus := make([]string, 0, n+1)
	for i := 0; i < n; i++ {
		ids = append(ids, fmt.Sprintf("%s-%04d", id, i))
		skus = append(skus, "phone")
	}
	plain = id + "-plain"
	ids = append(ids, plain)
	skus = append(skus, "thanks")
	// One statement for the batch, as the settler writes it: the trigger sees it whole.
	exec(`INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id, device_id, ip,
	        value, claimed_at, expires_at, kafka_partition, kafka_offset)
	      SELECT c, 'r-' || c, $2, $3, s, 'u-' || c, 'd', '127.0.0.1', 1000, now(), now() + interval '1 day', 0, 0
	        FROM unnest($1::text[], $4::text[]) AS x(c, s)`, ids, campaign, bl, skus)
	return campaign, ids[:n], plain
}

func deliverer(t *testing.T, pg *pgxpool.Pool, campaign string, cfg delivery.Config) *delivery.Deliverer {
	t.Helper()
	cfg.Campaigns = []string{campaign}
	d, err := delivery.New(cfg, pg, nil, nil, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// passUntil runs passes until every claim's delivery left "delivering" (or 30 s).
func passUntil(t *testing.T, d *delivery.Deliverer, pg *pgxpool.Pool, claims []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := d.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
		var open int
		pg.QueryRow(context.Background(), `SELECT count(*) FROM deliveries WHERE claim_id = ANY($1) AND state = 'delivering'`, claims).Scan(&open)
		if open == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("deliveries still open after 30 s")
}

func state(t *testing.T, pg *pgxpool.Pool, claim string) delivery.State {
	t.Helper()
	s, ok, err := delivery.Get(context.Background(), pg, claim)
	if err != nil || !ok {
		t.Fatalf("delivery of %s: ok=%v err=%v", claim, ok, err)
	}
	return s
}

func triggerMakesOneDeliveryPerPrize(t *testing.T, pg *pgxpool.Pool) {
	_, claims, plain := prizes(t, pg, "http://127.0.0.1:1/never", 3)
	for _, c := range claims {
		if s := state(t, pg, c); s.State != delivery.Delivering || s.Attempts != 0 {
			t.Fatalf("%s: %+v", c, s)
		}
	}
	if _, ok, _ := delivery.Get(context.Background(), pg, plain); ok {
		t.Fatal("a SKU without a webhook got a delivery")
	}
}

// 500s and a call that hangs past the timeout are retried with the same key; each
// prize ends delivered and fulfilled once; no two calls of one key ever overlap.
func failuresAreRetried(t *testing.T, pg *pgxpool.Pool) {
	f := newFulfilment(t, func(key string, call int) string {
		switch {
		case strings.HasSuffix(key, "0") && call <= 2:
			return "500"
		case strings.HasSuffix(key, "1") && call == 1:
			return "hang"
		}
		return "ok"
	})
	campaign, claims, _ := prizes(t, pg, f.srv.URL+"/fulfil", 20)
	d := deliverer(t, pg, campaign, delivery.Config{CallTimeout: 200 * time.Millisecond, BackoffMin: 100 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	passUntil(t, d, pg, claims)
	for _, c := range claims {
		s := state(t, pg, c)
		calls, done := f.stats(c)
		if s.State != delivery.Delivered || done != 1 || calls != s.Attempts {
			t.Fatalf("%s: state %+v, server saw %d calls and fulfilled %d", c, s, calls, done)
		}
		want := 1
		switch {
		case strings.HasSuffix(c, "0"):
			want = 3
		case strings.HasSuffix(c, "1"):
			want = 2
		}
		if calls != want {
			t.Fatalf("%s: %d calls, want %d", c, calls, want)
		}
	}
	if n := f.overlap.Load(); n != 0 {
		t.Fatalf("%d calls overlapped another call of the same key", n)
	}
	var evs int
	pg.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'delivered' AND key = ANY($1)`, claims).Scan(&evs)
	if evs != len(claims) {
		t.Fatalf("%d delivered events, want %d", evs, len(claims))
	}
	// Delivered is final: more passes call nobody.
	before := 0
	for _, c := range claims {
		n, _ := f.stats(c)
		before += n
	}
	d.Pass(context.Background())
	after := 0
	for _, c := range claims {
		n, _ := f.stats(c)
		after += n
	}
	if after != before {
		t.Fatalf("a delivered prize was called again (%d calls, then %d)", before, after)
	}
}

// A server that always fails dead-letters the delivery after MaxAttempts; an admin
// retry after it is fixed delivers it; retrying a delivered one is refused.
func deadLetterAndAdminRetry(t *testing.T, pg *pgxpool.Pool) {
	var broken atomic.Bool
	broken.Store(true)
	f := newFulfilment(t, func(string, int) string {
		if broken.Load() {
			return "500"
		}
		return "ok"
	})
	campaign, claims, plain := prizes(t, pg, f.srv.URL, 2)
	d := deliverer(t, pg, campaign, delivery.Config{MaxAttempts: 3, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	passUntil(t, d, pg, claims)
	for _, c := range claims {
		s := state(t, pg, c)
		calls, done := f.stats(c)
		if s.State != delivery.Failed || s.Attempts != 3 || calls != 3 || done != 0 || s.LastStatus == nil || *s.LastStatus != 500 || s.FailedAt == nil {
			t.Fatalf("%s: %+v (calls %d, fulfilled %d)", c, s, calls, done)
		}
	}
	broken.Store(false)
	if err := delivery.Retry(context.Background(), pg, claims[0]); err != nil {
		t.Fatal(err)
	}
	passUntil(t, d, pg, claims)
	if s := state(t, pg, claims[0]); s.State != delivery.Delivered {
		t.Fatalf("after the retry: %+v", s)
	}
	if s := state(t, pg, claims[1]); s.State != delivery.Failed {
		t.Fatalf("the claim not retried changed: %+v", s)
	}
	if err := delivery.Retry(context.Background(), pg, claims[0]); !errors.Is(err, delivery.ErrNotFailed) {
		t.Fatalf("retry of a delivered prize: %v", err)
	}
	if err := delivery.Retry(context.Background(), pg, plain); !errors.Is(err, delivery.ErrNoDelivery) {
		t.Fatalf("retry of a claim without delivery: %v", err)
	}
}

// A deliverer that dies in the middle of a call (its context ends while the server
// holds the call) records nothing; the lease runs out and another deliverer delivers
// with the same key, which the server fulfils once.
func delivererDyingMidCall(t *testing.T, pg *pgxpool.Pool) {
	entered := make(chan struct{}, 1)
	f := newFulfilment(t, func(_ string, call int) string {
		if call == 1 {
			entered <- struct{}{}
			return "hang"
		}
		return "ok"
	})
	campaign, claims, _ := prizes(t, pg, f.srv.URL, 1)
	// CallTimeout 2s: the lease is 2×2s + 5s.
	d1 := deliverer(t, pg, campaign, delivery.Config{CallTimeout: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d1.Pass(ctx); close(done) }()
	<-entered
	cancel() // the first settler dies mid-call
	<-done
	s := state(t, pg, claims[0])
	if s.State != delivery.Delivering || s.Attempts != 1 {
		t.Fatalf("after the death: %+v", s)
	}
	d2 := deliverer(t, pg, campaign, delivery.Config{CallTimeout: time.Second})
	if n, _ := d2.Pass(context.Background()); n != 0 {
		t.Fatal("a live lease was taken by another deliverer")
	}
	// End the lease now rather than waiting its 9 s.
	pg.Exec(context.Background(), `UPDATE deliveries SET lease_until = now() - interval '1 ms' WHERE claim_id = $1`, claims[0])
	passUntil(t, d2, pg, claims)
	calls, fulfilled := f.stats(claims[0])
	if s := state(t, pg, claims[0]); s.State != delivery.Delivered || calls != 2 || fulfilled != 1 {
		t.Fatalf("after the second deliverer: %+v, %d calls, fulfilled %d", s, calls, fulfilled)
	}
}

// Two deliverers (two settlers) over the same rows never call one key twice at once and
// deliver each prize once.
func twoDeliverersShareTheWork(t *testing.T, pg *pgxpool.Pool) {
	f := newFulfilment(t, func(string, int) string { time.Sleep(2 * time.Millisecond); return "ok" })
	campaign, claims, _ := prizes(t, pg, f.srv.URL, 200)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		d := deliverer(t, pg, campaign, delivery.Config{Batch: 16})
		wg.Add(1)
		go func() { defer wg.Done(); passUntil(t, d, pg, claims) }()
	}
	wg.Wait()
	for _, c := range claims {
		if calls, done := f.stats(c); calls != 1 || done != 1 {
			t.Fatalf("%s: %d calls, fulfilled %d", c, calls, done)
		}
	}
	if f.overlap.Load() != 0 {
		t.Fatal("overlapping calls of one key")
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, c := range []struct {
		cfg  delivery.Config
		want string
	}{
		{delivery.Config{Batch: -1}, "Batch"},
		{delivery.Config{Concurrency: 1000}, "Concurrency"},
		{delivery.Config{CallTimeout: time.Hour}, "CallTimeout"},
		{delivery.Config{MaxAttempts: -2}, "MaxAttempts"},
		{delivery.Config{BackoffMin: time.Second, BackoffMax: time.Millisecond}, "BackoffMin"},
	} {
		if _, err := delivery.New(c.cfg, nil, nil, nil, slog.Default()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}
