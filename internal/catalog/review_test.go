package catalog_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/testenv"
)

// The review of a seeded scenario against figures computed by hand, and the expiring
// holders list with its paging and bounds.
func TestReviewAndExpiring(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	c := e.Campaign(testenv.Spec{})
	ta, tb := testenv.ID(t, "ta"), testenv.ID(t, "tb")
	u := func(n string) string { return c.ID + "-" + n }
	for seg, users := range map[string][]string{ta: {u("a1"), u("a2"), u("a3")}, tb: {u("b1"), u("b2")}} {
		if _, err := e.PG.Exec(ctx, `INSERT INTO segments (name, size) VALUES ($1, $2)`, seg, len(users)); err != nil {
			t.Fatal(err)
		}
		for _, usr := range users {
			if _, err := e.PG.Exec(ctx, `INSERT INTO segment_members (segment, user_id) VALUES ($1, $2)`, seg, usr); err != nil {
				t.Fatal(err)
			}
		}
	}
	type claim struct {
		user, channel, state string
		amount               *int64
		expiresIn            string
	}
	amt := func(n int64) *int64 { return &n }
	seed := []claim{
		{u("a1"), "app", "redeemed", amt(12000), "100 hours"},
		{u("a2"), "app", "redeemed", amt(20000), "100 hours"},
		{u("a2"), "partner-x", "settled", nil, "30 hours"},
		{u("a3"), "partner-x", "expired", nil, "-1 hour"},
		{u("b1"), "app", "redeemed", nil, "100 hours"}, // a body-less redeem: used, no amount
		{u("b2"), "app", "settled", nil, "1 hour"},
		{u("c1"), "app", "settled", nil, "100 hours"},
	}
	ids := make([]string, len(seed))
	for i, s := range seed {
		ids[i] = testenv.NewClaimID(c.ID)
		if _, err := e.PG.Exec(ctx, `INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id,
			device_id, ip, value, claimed_at, expires_at, state, order_amount, channel, kafka_partition, kafka_offset)
			VALUES ($1, $2, $3, $4, 'rp-50', $5, 'd', '127.0.0.1', 50, now(), now() + $6::interval, $7, $8, $9, 0, 0)`,
			ids[i], testenv.ID(t, "rq"), c.ID, c.BusinessLine, s.user, s.expiresIn, s.state, s.amount, s.channel); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := c2(e).Review(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	// tier channel issued used rate recalled amount avg - computed by hand from the seed.
	want := []catalog.ReviewRow{
		{Tier: "*", Channel: "*", Issued: 7, Used: 3, UsageRate: 3.0 / 7, UsersRecalled: 3, AmountRedeem: 32000, AvgOrder: 16000},
		{Tier: "*", Channel: "app", Issued: 5, Used: 3, UsageRate: 3.0 / 5, UsersRecalled: 3, AmountRedeem: 32000, AvgOrder: 16000},
		{Tier: "*", Channel: "partner-x", Issued: 2},
		{Tier: ta, Channel: "*", Issued: 4, Used: 2, UsageRate: 0.5, UsersRecalled: 2, AmountRedeem: 32000, AvgOrder: 16000},
		{Tier: ta, Channel: "app", Issued: 2, Used: 2, UsageRate: 1, UsersRecalled: 2, AmountRedeem: 32000, AvgOrder: 16000},
		{Tier: ta, Channel: "partner-x", Issued: 2},
		{Tier: tb, Channel: "*", Issued: 2, Used: 1, UsageRate: 0.5, UsersRecalled: 1},
		{Tier: tb, Channel: "app", Issued: 2, Used: 1, UsageRate: 0.5, UsersRecalled: 1},
	}
	if len(rows) != len(want) {
		t.Fatalf("review has %d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i := range want {
		g := rows[i]
		w := want[i]
		if g.Tier != w.Tier || g.Channel != w.Channel || g.Issued != w.Issued || g.Used != w.Used ||
			g.UsersRecalled != w.UsersRecalled || g.AmountRedeem != w.AmountRedeem ||
			abs(g.UsageRate-w.UsageRate) > 1e-9 || abs(g.AvgOrder-w.AvgOrder) > 1e-9 {
			t.Errorf("row %d: %+v, want %+v", i, g, w)
		}
	}
	rep, err := c2(e).Report(ctx, c.ID)
	if err != nil || len(rep.Review) != len(rows) || rep.Review[0] != rows[0] || rep.Review[len(rows)-1] != rows[len(rows)-1] {
		t.Fatalf("the report's review %+v (err %v), want the review's rows", rep, err)
	}
	var buf bytes.Buffer
	if err := catalog.WriteReviewCSV(&buf, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if lines[0] != "tier,channel,issued,used,usage_rate,users_recalled,amount_redeemed,average_order_amount" ||
		lines[1] != "*,*,7,3,0.4286,3,32000,16000.00" || len(lines) != len(want)+1 {
		t.Fatalf("CSV:\n%s", buf.String())
	}

	// Expiring within 48h: b2's (1h) then a2's partner voucher (30h); not the redeemed,
	// the expired, nor the ones due in 100h. One per page.
	p1, err := c2(e).Expiring(ctx, c.ID, 48*time.Hour, "", 1)
	if err != nil || len(p1.Holders) != 1 || p1.Holders[0].ClaimID != ids[5] || p1.Holders[0].UserID != u("b2") || p1.Next == "" {
		t.Fatalf("page 1: %+v %v", p1, err)
	}
	p2, err := c2(e).Expiring(ctx, c.ID, 48*time.Hour, p1.Next, 1)
	if err != nil || len(p2.Holders) != 1 || p2.Holders[0].ClaimID != ids[2] || p2.Next != "" {
		t.Fatalf("page 2 (the last): %+v %v", p2, err)
	}
	if all, err := c2(e).Expiring(ctx, c.ID, 48*time.Hour, "", 10); err != nil || len(all.Holders) != 2 || all.Next != "" {
		t.Fatalf("one page of 10: %+v %v", all, err)
	}
	for _, bad := range []struct {
		within time.Duration
		after  string
		limit  int
		field  string
	}{{0, "", 10, "within"}, {32 * 24 * time.Hour, "", 10, "within"}, {time.Hour, "", 0, "limit"},
		{time.Hour, "", 1001, "limit"}, {time.Hour, "nope", 10, "after"}} {
		_, err := c2(e).Expiring(ctx, c.ID, bad.within, bad.after, bad.limit)
		var fe *catalog.FieldError
		if !errors.As(err, &fe) || fe.Field != bad.field {
			t.Errorf("Expiring(%s, %q, %d): %v; want a field error on %s", bad.within, bad.after, bad.limit, err, bad.field)
		}
	}
	if _, err := c2(e).Expiring(ctx, testenv.ID(t, "none"), time.Hour, "", 10); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("unknown campaign: %v", err)
	}
}

func c2(e *testenv.Env) *catalog.Catalog { return e.Cat }

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
