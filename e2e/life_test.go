package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/flashgate/flashgate/bench/life"
	"github.com/flashgate/flashgate/internal/testenv"
)

// bench life (the demo's voucher's-life step) against a real gateway and settler: every
// answer it checks is the one CONTRACT.md promises, and the review it prints adds up to
// what it did - every voucher claimed was used, by the owner or the friend it went to,
// the push issued one to every user of two tiers and a few of tier a's were used, and
// the amounts redeemed are the sums of the orders that used them.
func TestBenchLifeAgainstRealBinaries(t *testing.T) {
	s := start(t, opts{})
	const n = 8
	camp := testenv.ID(t, "life")
	sum, err := life.Run(context.Background(), life.Config{Target: s.public, Admin: s.admin, AdminToken: adminToken,
		Campaign: camp, BusinessLine: testenv.ID(t, "bl"), Holders: n, Settle: 60 * time.Second, Client: s.http})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Claimed != n || sum.Redeemed != n || sum.Transferred != n/2 || sum.RolledBack != 1 {
		t.Fatalf("summary %+v", sum)
	}
	if sum.Refused["409 below_min_spend"] != 1 || sum.Refused["409 not_applicable"] != 1 || sum.Refused["404 "] != 1 {
		t.Fatalf("refusals %v; want one below_min_spend, one not_applicable, one 404 for the old owner", sum.Refused)
	}
	// Orders: owners 0..n/2-1 paid MinSpend+10i, owner 1 was refunded and paid 3*MinSpend
	// instead; each friend paid MinSpend+5.
	var amount int64
	for i := range n / 2 {
		amount += life.MinSpend + int64(10*i)
	}
	amount += 3*life.MinSpend - (life.MinSpend + 10)
	amount += n / 2 * (life.MinSpend + 5)
	var total, app, tierA, tierB *life.ReviewRow
	for i, r := range sum.Review {
		switch {
		case r.Tier == "*" && r.Channel == "*":
			total = &sum.Review[i]
		case r.Tier == "*" && r.Channel == "app":
			app = &sum.Review[i]
		case r.Tier == camp+"-tier-a" && r.Channel == "*":
			tierA = &sum.Review[i]
		case r.Tier == camp+"-tier-b" && r.Channel == "*":
			tierB = &sum.Review[i]
		}
	}
	pushed := int64(2 * life.TierUsers)
	for _, c := range []struct {
		name                             string
		r                                *life.ReviewRow
		issued, used, recalled, redeemed int64
	}{
		{"app channel", app, n, n, n, amount},
		{"total", total, n + pushed, n + life.TierUsed, n + life.TierUsed, amount + life.TierUsed*80},
		{"tier a", tierA, life.TierUsers, life.TierUsed, life.TierUsed, life.TierUsed * 80},
		{"tier b", tierB, life.TierUsers, 0, 0, 0},
	} {
		if c.r == nil || c.r.Issued != c.issued || c.r.Used != c.used || c.r.UsersRecalled != c.recalled || c.r.AmountRedeem != c.redeemed {
			t.Errorf("review %s row %+v; want issued %d used %d recalled %d redeemed %d", c.name, c.r, c.issued, c.used, c.recalled, c.redeemed)
		}
	}
	if t.Failed() {
		t.Logf("review rows: %+v", sum.Review)
	}
	if sum.Pushed != pushed {
		t.Errorf("pushed %d, want %d", sum.Pushed, pushed)
	}
}
