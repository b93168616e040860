package settle_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/bench/verify"
	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/gateway/vouchers"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/delivery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/settle"
)

// The race, through settlement: a 1-in-1,000 prize of stock 5 raced by 20,000
// draws (the real claimer: crypto/rand, claim.lua, durability) is never won more than 5
// times, in Redis and in Postgres; every draw is one draws row with the outcome its
// client heard, a won draw is also its claim row; redelivery writes nothing twice.
//
// The claimer produces to an in-process broker (20,000 records stay off the dev
// broker); the records the settler reads are the claimer's outbox entries as the relay
// republishes them (claim.FromOutbox), on a topic of the test's own.
func TestLotteryRaceSettled(t *testing.T) {
	e := testenv.Private(t) // 20,000 outbox entries and records stay off the shared Redis
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 999, PerUser: 1,
		SKUs: []testenv.SKU{{SKU: "phone", Stock: 5, Value: 5000, Weight: 1}}})
	cl := claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil)
	ctx := testenv.Ctx(t, 5*time.Minute)
	const draws = 20_000
	heard := make(map[string]string, draws) // draw_id -> outcome ("won" or "no_prize")
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	var failed error
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r := &claimer.Request{RequestID: fmt.Sprintf("rq-%d", i), CampaignID: c.ID, SKU: "x",
					UserID: fmt.Sprintf("u-%d", i), DeviceID: fmt.Sprintf("d-%d", i), IP: "10.0.0.1"}
				err := cl.Do(ctx, r)
				mu.Lock()
				switch {
				case err != nil:
					failed = err
				case r.Code == claim.CodeAccepted && r.SKU == "phone":
					heard[r.ClaimID] = "won"
				case r.Code == claim.CodeNoPrize:
					heard[r.ClaimID] = "no_prize"
				default:
					failed = fmt.Errorf("draw %d: %s sku %q", i, claim.ReasonOf(r.Code), r.SKU)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < draws; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if failed != nil || len(heard) != draws {
		t.Fatalf("%d distinct answers, err %v", len(heard), failed)
	}
	won := 0
	for _, o := range heard {
		if o == "won" {
			won++
		}
	}
	if won > 5 {
		t.Fatalf("%d prizes won, stock 5", won)
	}

	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != draws {
		t.Fatalf("outbox: %d records, %v", len(recs), err)
	}
	kcl := testenv.Producer(t)
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-draws")
	testenv.Produce(t, kcl, topic, recs)
	r := startSettler(t, deps{rdb: e.RDB, pg: e.PG, topic: topic, group: group, cfg: settle.Config{MaxBatch: 1000}})
	testenv.Eventually(t, 2*time.Minute, "every draw a row", func() bool {
		var n int
		e.PG.QueryRow(ctx, `SELECT count(*) FROM draws WHERE campaign_id = $1`, c.ID).Scan(&n)
		return n == draws
	})
	check := func(when string) {
		t.Helper()
		rows, err := e.PG.Query(ctx, `SELECT d.draw_id, d.outcome, d.sku, d.pick, d.random, d.odds_version, cl.claim_id
			FROM draws d LEFT JOIN claims cl ON cl.claim_id = d.draw_id WHERE d.campaign_id = $1`, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n, wonRows := 0, 0
		for rows.Next() {
			var id, outcome, ver string
			var sku, pick, claimID *string
			var rv int64
			if err := rows.Scan(&id, &outcome, &sku, &pick, &rv, &ver, &claimID); err != nil {
				t.Fatal(err)
			}
			n++
			if heard[id] != outcome {
				t.Fatalf("%s: draw %s is %s in Postgres, its client heard %q", when, id, outcome, heard[id])
			}
			if rv < 0 || rv >= 1000 || len(ver) != 16 {
				t.Fatalf("%s: draw %s random %d version %q", when, id, rv, ver)
			}
			if outcome == "won" {
				wonRows++
				if sku == nil || *sku != "phone" || claimID == nil || pick == nil || *pick != "phone" || rv < 999 {
					t.Fatalf("%s: won draw %s: sku %v pick %v random %d claim row %v", when, id, sku, pick, rv, claimID)
				}
			} else if claimID != nil || sku != nil {
				t.Fatalf("%s: no-prize draw %s has a claim row or a SKU", when, id)
			} else if (pick != nil) != (rv >= 999) {
				t.Fatalf("%s: no-prize draw %s: pick %v for random %d", when, id, pick, rv)
			}
		}
		var claims int
		e.PG.QueryRow(ctx, `SELECT count(*) FROM claims WHERE campaign_id = $1`, c.ID).Scan(&claims)
		if n != draws || wonRows != won || claims != won {
			t.Fatalf("%s: %d draw rows (%d won), %d claim rows; want %d, %d, %d", when, n, wonRows, claims, draws, won, won)
		}
	}
	check("settled")
	h, _ := e.RDB.HMGet(ctx, rkeys.SKU(c.ID, "phone"), "stock", "taken").Result()
	if h[1] != fmt.Sprint(won) || h[0] != fmt.Sprint(5-won) {
		t.Fatalf("Redis stock/taken %v, %d won", h, won)
	}
	testenv.Eventually(t, 30*time.Second, "outbox trimmed", func() bool {
		ob, _ := c.Leftovers(t)
		return ob == 0
	})
	// Redelivery of every record: nothing new.
	testenv.Produce(t, kcl, topic, recs)
	r.waitMetric("flashgate_settler_duplicates_ignored_total", draws, 2*time.Minute)
	check("after redelivery")
	for name, want := range map[string]float64{
		"flashgate_settler_records_consumed_total":   2 * draws,
		"flashgate_settler_claims_written_total":     draws, // claims and no-prize draws
		"flashgate_settler_duplicates_ignored_total": draws,
	} {
		if got := r.metric(name); got != want {
			t.Fatalf("%s = %v after redelivery, want %v", name, got, want)
		}
	}
	t.Logf("20,000 draws at 1:1000, stock 5: %d won; %d rows", won, draws)
}

// A won prize with a webhook is fulfilled once, after its row is in Postgres, by a real
// HTTP server the test starts: the first call of each prize is answered 500 (retried
// with backoff, the same Idempotency-Key), the second 200; further passes call nothing;
// the state "delivered" is what GET /v1/claims/{id} shows (gateway/vouchers), and an
// admin retry of a delivered prize is refused. A no-prize draw has no delivery.
func TestLotteryPrizeDeliveredOnce(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}     // Idempotency-Key -> calls
	acted := map[string]int{}     // claim -> times the server acted on it (answered 2xx)
	bodies := map[string]string{} // claim -> the prize's SKU in the body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		var p delivery.Prize
		json.NewDecoder(r.Body).Decode(&p)
		mu.Lock()
		defer mu.Unlock()
		calls[key]++
		if calls[key] == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if acted[key] == 0 { // the fulfilment side acts once per key
			bodies[key] = p.SKU
		}
		acted[key]++
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	e := testenv.Private(t)
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 0, PerUser: 1,
		SKUs: []testenv.SKU{{SKU: "phone", Stock: 3, Value: 5000, Weight: 1, Webhook: srv.URL + "/prizes"}}})
	cl := claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil)
	ctx := testenv.Ctx(t, 2*time.Minute)
	var won []string
	var noPrize string
	for i := 0; i < 4; i++ {
		r := &claimer.Request{RequestID: fmt.Sprintf("rq-%d", i), CampaignID: c.ID, SKU: "x",
			UserID: fmt.Sprintf("u-%d", i), DeviceID: fmt.Sprintf("d-%d", i), IP: "10.0.0.1"}
		if err := cl.Do(ctx, r); err != nil {
			t.Fatal(err)
		}
		switch {
		case i < 3 && r.Code == claim.CodeAccepted:
			won = append(won, r.ClaimID)
		case i == 3 && r.Code == claim.CodeNoPrize: // the stock of 3 is gone: no prize
			noPrize = r.ClaimID
		default:
			t.Fatalf("draw %d: %s", i, claim.ReasonOf(r.Code))
		}
	}
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != 4 {
		t.Fatalf("outbox %d, %v", len(recs), err)
	}
	topic := testenv.NewTopic(t)
	testenv.Produce(t, testenv.Producer(t), topic, recs)
	startSettler(t, deps{rdb: e.RDB, pg: e.PG, topic: topic, group: testenv.ID(t, "settler-deliver"), cfg: settle.Config{}})
	testenv.Eventually(t, time.Minute, "the four draws settled", func() bool {
		var n int
		e.PG.QueryRow(ctx, `SELECT count(*) FROM draws WHERE campaign_id = $1`, c.ID).Scan(&n)
		return n == 4
	})
	d, err := delivery.New(delivery.Config{Campaigns: []string{c.ID}, CallTimeout: time.Second,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond}, e.PG, nil, nil, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "every prize delivered", func() bool {
		if _, err := d.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		e.PG.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE campaign_id = $1 AND state = 'delivered'`, c.ID).Scan(&n)
		return n == 3
	})
	for i := 0; i < 3; i++ { // more passes call nothing
		if _, err := d.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	store, err := vouchers.New(e.PG)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 3 {
		t.Fatalf("the server was called for %d keys, want the 3 prizes: %v", len(calls), calls)
	}
	for _, id := range won {
		if calls[id] != 2 || acted[id] != 1 || bodies[id] != "phone" {
			t.Errorf("prize %s: %d calls, acted %d times, sku %q; want 2 calls (a 500, then 200), acted once, phone",
				id, calls[id], acted[id], bodies[id])
		}
		v, ok, err := store.Voucher(ctx, id)
		if err != nil || !ok || v.Delivery != "delivered" {
			t.Errorf("GET prize %s: delivery %q (%v %v), want delivered", id, v.Delivery, ok, err)
		}
		if err := delivery.Retry(ctx, e.PG, id); err != delivery.ErrNotFailed {
			t.Errorf("retry of a delivered prize: %v, want ErrNotFailed", err)
		}
	}
	if err := delivery.Retry(ctx, e.PG, noPrize); err != delivery.ErrNoDelivery {
		t.Errorf("a no-prize draw's delivery: %v, want ErrNoDelivery", err)
	}

	// bench verify's lottery checks hold on these books, and see a lost draw row.
	rep, err := verify.Run(ctx, e.RDB, e.PG, verify.Config{Campaign: c.ID, Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, ch := range rep.Checks {
		names[ch.Name] = true
		if !ch.Pass {
			t.Errorf("verify %s: %s", ch.Name, ch.Detail)
		}
	}
	for _, n := range []string{"one row per draw", "won draws are the claims", "odds"} {
		if !names[n] {
			t.Errorf("verify has no %q check: %v", n, rep.Checks)
		}
	}
	if _, err := e.PG.Exec(ctx, `DELETE FROM draws WHERE draw_id = $1`, noPrize); err != nil {
		t.Fatal(err)
	}
	rep, err = verify.Run(ctx, e.RDB, e.PG, verify.Config{Campaign: c.ID, Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range rep.Checks {
		if ch.Name == "one row per draw" && ch.Pass {
			t.Errorf("verify passed one row per draw with a draw row missing: %s", ch.Detail)
		}
	}
	if rep.Held {
		t.Error("verify held with a draw row missing")
	}
}
