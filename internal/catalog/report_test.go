package catalog_test

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/api"
	"github.com/flashgate/flashgate/gateway/vouchers"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/expire"
)

// row is the comparable part of a report row.
func row(r catalog.ReportRow) string {
	return fmt.Sprintf("%s/%s issued=%d redeemed=%d expired=%d outstanding=%d users=%d rate=%.4f spent=%d recovered=%d net=%d",
		r.Segment, r.SKU, r.Issued, r.Redeemed, r.Expired, r.Outstanding, r.Users, r.RedemptionRate,
		r.BudgetSpent, r.BudgetRecovered, r.NetSpent)
}

// A recall campaign limited to a segment, whose claimants are split into two tiers:
// the report counts issued, redeemed, expired and outstanding vouchers, distinct users,
// the redemption rate and the budget spent and recovered - per SKU, in total, and per
// tier - from the books, in JSON and CSV.
func TestCampaignReport(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	p := testenv.ID(t, "r") // user ids unique to this test: segments are shared
	user := func(i int) string { return fmt.Sprintf("%s-u%d", p, i) }
	var all, gold, silver []string
	for i := 0; i < 10; i++ {
		all = append(all, user(i))
		if i < 5 {
			gold = append(gold, user(i))
		} else {
			silver = append(silver, user(i))
		}
	}
	recall, goldSeg, silverSeg := testenv.ID(t, "recall"), testenv.ID(t, "gold"), testenv.ID(t, "silver")
	for name, members := range map[string][]string{recall: all, goldSeg: gold, silverSeg: silver} {
		if _, err := e.Cat.PutSegment(ctx, name, []byte(strings.Join(members, "\n"))); err != nil {
			t.Fatal(err)
		}
	}
	c := e.Campaign(testenv.Spec{Segment: recall, PerUser: 2,
		SKUs: []testenv.SKU{{SKU: "rp-100", Stock: 5, Value: 100}, {SKU: "rp-50", Stock: 10, Value: 50}}})

	claims := map[string]string{} // "user/sku" → claim id
	take := func(i int, sku string) {
		a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, sku, user(i), fmt.Sprintf("rq-%d-%s", i, sku))
		if err != nil || a.Code != claim.CodeAccepted {
			t.Fatalf("claim %d %s: code %d err %v", i, sku, a.Code, err)
		}
		claims[fmt.Sprintf("%d/%s", i, sku)] = a.ClaimID
	}
	for i := 0; i < 10; i++ {
		take(i, "rp-50")
	}
	for i := 0; i < 4; i++ {
		take(i, "rp-100")
	}
	// Not in the segment: refused, and so never in the report.
	if a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, "rp-50", p+"-outsider", "rq-out"); err != nil || a.Code != claim.CodeNotEligible {
		t.Fatalf("outsider: %+v %v", a, err)
	}
	// One claim still in flight at report time: not issued yet.
	if _, err := testenv.SettleOutbox(ctx, e.RDB, e.PG, c.ID); err != nil {
		t.Fatal(err)
	}
	if a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, "rp-100", user(9), "rq-late"); err != nil || a.Code != claim.CodeAccepted {
		t.Fatalf("late claim: %+v %v", a, err)
	}

	store, err := vouchers.New(e.PG)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		i   int
		sku string
	}{{0, "rp-50"}, {1, "rp-50"}, {5, "rp-50"}, {0, "rp-100"}} {
		if _, code, err := store.Redeem(ctx, claims[fmt.Sprintf("%d/%s", k.i, k.sku)], user(k.i)); err != nil || code != api.RedeemOK {
			t.Fatalf("redeem %d %s: %d %v", k.i, k.sku, code, err)
		}
	}
	due := []string{claims["2/rp-100"], claims["3/rp-100"], claims["9/rp-50"]}
	if _, err := e.PG.Exec(ctx, `UPDATE claims SET expires_at = now() - interval '1 second' WHERE claim_id = ANY($1)`, due); err != nil {
		t.Fatal(err)
	}
	x, err := expire.New(expire.Config{Campaigns: []string{c.ID}}, e.RDB, e.PG, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := x.Once(ctx); err != nil || st.Expired != 3 {
		t.Fatalf("expire: %+v %v", st, err)
	}

	rep, err := e.Cat.Report(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Segment == nil || *rep.Segment != recall || rep.BusinessLine != c.BusinessLine {
		t.Fatalf("header: %+v", rep)
	}
	want := []string{
		"/rp-100 issued=4 redeemed=1 expired=2 outstanding=1 users=4 rate=0.2500 spent=400 recovered=200 net=200",
		"/rp-50 issued=10 redeemed=3 expired=1 outstanding=6 users=10 rate=0.3000 spent=500 recovered=50 net=450",
		"/* issued=14 redeemed=4 expired=3 outstanding=7 users=10 rate=0.2857 spent=900 recovered=250 net=650",
	}
	got := []string{row(rep.SKUs[0]), row(rep.SKUs[1]), row(rep.Total)}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
	if rep.SKUs[0].Stock != 5 || rep.SKUs[1].Value != 50 || rep.Total.Stock != 15 {
		t.Errorf("stock/value: %+v %+v %+v", rep.SKUs[0], rep.SKUs[1], rep.Total)
	}
	var segs []string
	for _, s := range rep.Segments {
		for _, r := range s.SKUs {
			segs = append(segs, row(r))
		}
		segs = append(segs, row(s.Total))
	}
	wantSegs := []string{
		recall + "/rp-100 issued=4 redeemed=1 expired=2 outstanding=1 users=4 rate=0.2500 spent=400 recovered=200 net=200",
		recall + "/rp-50 issued=10 redeemed=3 expired=1 outstanding=6 users=10 rate=0.3000 spent=500 recovered=50 net=450",
		recall + "/* issued=14 redeemed=4 expired=3 outstanding=7 users=10 rate=0.2857 spent=900 recovered=250 net=650",
		goldSeg + "/rp-100 issued=4 redeemed=1 expired=2 outstanding=1 users=4 rate=0.2500 spent=400 recovered=200 net=200",
		goldSeg + "/rp-50 issued=5 redeemed=2 expired=0 outstanding=3 users=5 rate=0.4000 spent=250 recovered=0 net=250",
		goldSeg + "/* issued=9 redeemed=3 expired=2 outstanding=4 users=5 rate=0.3333 spent=650 recovered=200 net=450",
		silverSeg + "/rp-50 issued=5 redeemed=1 expired=1 outstanding=3 users=5 rate=0.2000 spent=250 recovered=50 net=200",
		silverSeg + "/* issued=5 redeemed=1 expired=1 outstanding=3 users=5 rate=0.2000 spent=250 recovered=50 net=200",
	}
	// The campaign's own segment comes first; the tiers follow in name order.
	if goldSeg > silverSeg {
		wantSegs = append(wantSegs[:3], append(wantSegs[6:], wantSegs[3:6]...)...)
	}
	if strings.Join(segs, "\n") != strings.Join(wantSegs, "\n") {
		t.Errorf("segment split:\n%s\nwant:\n%s", strings.Join(segs, "\n"), strings.Join(wantSegs, "\n"))
	}

	var buf bytes.Buffer
	if err := rep.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse: %v", err)
	}
	if len(recs) != 1+3+8 || strings.Join(recs[0], ",") != strings.Join(catalog.ReportCSVHeader, ",") {
		t.Fatalf("CSV: %d lines, header %v", len(recs), recs[0])
	}
	if got := strings.Join(recs[2], ","); got != "*,rp-50,50,10,10,3,1,6,10,0.3000,500,50,450" {
		t.Errorf("CSV rp-50 line %q", got)
	}
	if got := strings.Join(recs[3], ","); got != "*,*,0,15,14,4,3,7,10,0.2857,900,250,650" {
		t.Errorf("CSV total line %q", got)
	}

	if _, err := e.Cat.Report(ctx, testenv.ID(t, "nope")); err != catalog.ErrNotFound {
		t.Errorf("unknown campaign: %v, want ErrNotFound", err)
	}
	if _, err := e.Cat.Report(ctx, "bad id!"); err != catalog.ErrNotFound {
		t.Errorf("invalid id: %v, want ErrNotFound", err)
	}
}

// A campaign open to everyone has no segment split, and a campaign with no claims
// reports zeros (and a zero rate, not NaN).
func TestReportWithoutClaims(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 20*time.Second)
	c := e.Campaign(testenv.Spec{})
	rep, err := e.Cat.Report(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Segments) != 0 || len(rep.SKUs) != 1 || rep.Total.Issued != 0 || rep.Total.RedemptionRate != 0 || rep.SKUs[0].Stock != 10 {
		t.Fatalf("empty report: %+v", rep)
	}
}
