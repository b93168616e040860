package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// race sends one claim per user concurrently (at most conc in flight) and returns the
// answers in user order.
func (s *system) race(campaign, skuID string, users []string, conc int) []claimResp {
	out := make([]claimResp, len(users))
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = s.claimUntilAnswered(claimReq{CampaignID: campaign, SKU: skuID, UserID: u,
				DeviceID: "dev-" + u, RequestID: "req-" + u}, 20*time.Second)
		}()
	}
	wg.Wait()
	return out
}

func users(prefix string, n int) []string {
	u := make([]string, n)
	for i := range u {
		u[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return u
}

func count(answers []claimResp) (accepted int, reasons map[string]int, ids map[string]bool) {
	reasons = map[string]int{}
	ids = map[string]bool{}
	for _, a := range answers {
		if a.Status == 200 {
			accepted++
			ids[a.ClaimID] = true
		} else {
			reasons[fmt.Sprintf("%d %s%s", a.Status, a.Reason, a.Error)]++
		}
	}
	return
}

// 2,000 distinct users race for 100 units: exactly 100 accepted, 100 rows, stock 0,
// budget spent = 100 x value, nobody over the per-user limit.
func TestRaceForStock(t *testing.T) {
	s := start(t, opts{})
	bl := s.businessLine(1_000_000)
	cmp := s.campaign(bl, 100_000, 1, sku{"rp-50", 100, 50})

	answers := s.race(cmp, "rp-50", users(testenv.ID(t, "u"), 2000), 200)
	accepted, reasons, ids := count(answers)
	if accepted != 100 || len(ids) != 100 {
		t.Fatalf("accepted %d (distinct claim ids %d), want 100; others: %v", accepted, len(ids), reasons)
	}
	if reasons["409 sold_out"] != 1900 {
		t.Errorf("rejections %v, want 1900 x 409 sold_out", reasons)
	}
	if n := s.settled(cmp, 60*time.Second); n != 100 {
		t.Fatalf("rows in Postgres %d, want 100", n)
	}
	ctx := context.Background()
	var rows, sum, ledger, ledgerSum, maxPerUser int64
	if err := s.pg.QueryRow(ctx, `SELECT count(*), coalesce(sum(value),0),
		(SELECT count(*) FROM budget_ledger WHERE campaign_id=$1 AND kind='reserve'),
		(SELECT coalesce(sum(amount),0) FROM budget_ledger WHERE campaign_id=$1 AND kind='reserve'),
		(SELECT coalesce(max(n),0) FROM (SELECT count(*) n FROM claims WHERE campaign_id=$1 GROUP BY user_id) x)
		FROM claims WHERE campaign_id=$1`, cmp).Scan(&rows, &sum, &ledger, &ledgerSum, &maxPerUser); err != nil {
		t.Fatal(err)
	}
	if rows != 100 || sum != 5000 || ledger != 100 || ledgerSum != 5000 || maxPerUser != 1 {
		t.Errorf("postgres: rows %d sum %d ledger %d/%d max per user %d; want 100, 5000, 100/5000, 1",
			rows, sum, ledger, ledgerSum, maxPerUser)
	}
	for id := range ids {
		var n int
		if err := s.pg.QueryRow(ctx, `SELECT count(*) FROM claims WHERE claim_id=$1`, id).Scan(&n); err != nil || n != 1 {
			t.Errorf("claim %s answered 200 has %d rows (err %v), want 1", id, n, err)
		}
	}
	if st := s.hgetInt(rkeys.SKU(cmp, "rp-50"), "stock"); st != 0 {
		t.Errorf("redis stock left %d, want 0", st)
	}
	if sp := s.hgetInt(rkeys.Meta(cmp), "spent"); sp != 5000 {
		t.Errorf("redis campaign spent %d, want 5000", sp)
	}
	if sp := s.hgetInt(rkeys.BusinessLine(bl), "spent"); sp != 5000 {
		t.Errorf("redis business line spent %d, want 5000", sp)
	}
}

// The campaign budget runs out before the stock.
func TestBudgetBeforeStock(t *testing.T) {
	s := start(t, opts{})
	bl := s.businessLine(1_000_000)
	cmp := s.campaign(bl, 1000, 1, sku{"rp-50", 100, 50}) // budget for 20 of 100

	accepted, reasons, _ := count(s.race(cmp, "rp-50", users(testenv.ID(t, "u"), 300), 100))
	if accepted != 20 || reasons["409 budget_exhausted"] != 280 {
		t.Fatalf("accepted %d, others %v; want 20 accepted and 280 x 409 budget_exhausted", accepted, reasons)
	}
	if n := s.settled(cmp, 60*time.Second); n != 20 {
		t.Fatalf("rows %d, want 20", n)
	}
	if st := s.hgetInt(rkeys.SKU(cmp, "rp-50"), "stock"); st != 80 {
		t.Errorf("stock left %d, want 80", st)
	}
}

// A business line's budget shared by two campaigns is never exceeded, though each
// campaign alone could spend more.
func TestBusinessLineBudgetShared(t *testing.T) {
	s := start(t, opts{})
	bl := s.businessLine(1500) // 30 vouchers of 50
	a := s.campaign(bl, 100_000, 1, sku{"rp-50", 100, 50})
	b := s.campaign(bl, 100_000, 1, sku{"rp-50", 100, 50})

	var wg sync.WaitGroup
	var ra, rb []claimResp
	wg.Add(2)
	go func() { defer wg.Done(); ra = s.race(a, "rp-50", users(testenv.ID(t, "ua"), 200), 100) }()
	go func() { defer wg.Done(); rb = s.race(b, "rp-50", users(testenv.ID(t, "ub"), 200), 100) }()
	wg.Wait()
	na, resa, _ := count(ra)
	nb, resb, _ := count(rb)
	if na+nb != 30 {
		t.Fatalf("accepted %d + %d, want 30 in all (%v %v)", na, nb, resa, resb)
	}
	if resa["409 budget_exhausted"]+resb["409 budget_exhausted"] != 370 {
		t.Errorf("rejections %v %v, want 370 x budget_exhausted", resa, resb)
	}
	rows := s.settled(a, 60*time.Second) + s.settled(b, 60*time.Second)
	var sum int64
	if err := s.pg.QueryRow(context.Background(),
		`SELECT coalesce(sum(value),0) FROM claims WHERE business_line=$1`, bl).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if rows != 30 || sum != 1500 {
		t.Errorf("postgres rows %d value %d, want 30 and 1500", rows, sum)
	}
	if sp := s.hgetInt(rkeys.BusinessLine(bl), "spent"); sp != 1500 {
		t.Errorf("business line spent %d, want 1500", sp)
	}
}

// A retry with the same request_id returns the same claim_id and creates no second row;
// the same request_id with a different body is refused with 422.
func TestRetrySameRequestID(t *testing.T) {
	s := start(t, opts{})
	bl := s.businessLine(1_000_000)
	cmp := s.campaign(bl, 100_000, 5, sku{"rp-50", 100, 50})
	r := claimReq{CampaignID: cmp, SKU: "rp-50", UserID: "u-retry", DeviceID: "d-1", RequestID: testenv.ID(t, "rq")}

	first := s.claim(r)
	if first.Status != 200 || first.ClaimID == "" || first.Replayed {
		t.Fatalf("first claim: %+v, want 200 with a claim_id, not replayed", first)
	}
	for i := range 3 {
		again := s.claimUntilAnswered(r, 10*time.Second)
		if again.Status != 200 || again.ClaimID != first.ClaimID || !again.Replayed {
			t.Fatalf("retry %d: %+v, want 200 claim %s with Idempotent-Replayed", i, again, first.ClaimID)
		}
	}
	other := r
	other.SKU = "rp-51"
	if a := s.claim(other); a.Status != 422 || a.Error != "idempotency_key_reuse" {
		t.Errorf("same request_id, other body: %+v, want 422 idempotency_key_reuse", a)
	}
	if n := s.settled(cmp, 30*time.Second); n != 1 {
		t.Fatalf("rows %d, want 1", n)
	}
	// Settled: the retry is still answered with the same claim.
	if again := s.claim(r); again.Status != 200 || again.ClaimID != first.ClaimID {
		t.Errorf("retry after settlement: %+v, want 200 %s", again, first.ClaimID)
	}
	if n := s.rows(cmp); n != 1 {
		t.Errorf("rows after retries %d, want 1", n)
	}
	if taken := s.hgetInt(rkeys.SKU(cmp, "rp-50"), "taken"); taken != 1 {
		t.Errorf("redis taken %d, want 1", taken)
	}
}

// Broker down: claims get 503, stock and budget are fully restored, and retries with the
// same request_ids after the broker returns succeed once each.
func TestBrokerDown(t *testing.T) {
	port := testenv.FreePort(t)
	dir := tempDir(t, "broker")
	broker := startBroker(t, dir, port)
	s := start(t, opts{brokers: fmt.Sprintf("127.0.0.1:%d", port)})
	bl := s.businessLine(1_000_000)
	cmp := s.campaign(bl, 100_000, 1, sku{"rp-50", 10, 50})

	// The broker works: one claim goes through.
	ok := s.claim(claimReq{CampaignID: cmp, SKU: "rp-50", UserID: "u-before", DeviceID: "d-0", RequestID: "rq-before"})
	if ok.Status != 200 {
		t.Fatalf("claim with the broker up: %+v", ok)
	}
	broker.Kill()

	reqs := make([]claimReq, 5)
	for i := range reqs {
		reqs[i] = claimReq{CampaignID: cmp, SKU: "rp-50", UserID: fmt.Sprintf("u-%d", i), DeviceID: "d-1", RequestID: fmt.Sprintf("rq-%d", i)}
	}
	var wg sync.WaitGroup
	down := make([]claimResp, len(reqs))
	for i, r := range reqs {
		wg.Add(1)
		go func() { defer wg.Done(); down[i] = s.claim(r) }()
	}
	wg.Wait()
	for i, a := range down {
		if a.Status != 503 || a.Error != "unavailable" {
			t.Errorf("claim %d with the broker down: %+v, want 503 unavailable", i, a)
		}
	}
	// Everything those claims took was given back.
	if st := s.hgetInt(rkeys.SKU(cmp, "rp-50"), "stock"); st != 9 {
		t.Errorf("stock %d after failed produces, want 9 (only the first claim holds one)", st)
	}
	if sp := s.hgetInt(rkeys.Meta(cmp), "spent"); sp != 50 {
		t.Errorf("campaign spent %d, want 50", sp)
	}
	if sp := s.hgetInt(rkeys.BusinessLine(bl), "spent"); sp != 50 {
		t.Errorf("business line spent %d, want 50", sp)
	}
	for _, r := range reqs {
		if n := s.hgetInt(rkeys.Users(cmp), r.UserID); n != 0 {
			t.Errorf("user %s holds %d claims after a failed produce, want 0", r.UserID, n)
		}
	}

	startBroker(t, dir, port)
	ids := map[string]bool{}
	for i, r := range reqs {
		a := s.claimUntilAnswered(r, 60*time.Second)
		if a.Status != 200 {
			t.Fatalf("retry %d after the broker returned: %+v, want 200", i, a)
		}
		ids[a.ClaimID] = true
		if again := s.claimUntilAnswered(r, 10*time.Second); again.ClaimID != a.ClaimID {
			t.Errorf("second retry %d: %+v, want the same claim %s", i, again, a.ClaimID)
		}
	}
	if n := s.settled(cmp, 60*time.Second); n != 6 {
		t.Errorf("rows %d, want 6 (one before the outage, five retried)", n)
	}
	if st := s.hgetInt(rkeys.SKU(cmp, "rp-50"), "stock"); st != 4 {
		t.Errorf("stock %d, want 4", st)
	}
}
