package reconcile_test

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/reconcile"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/expire"
	"github.com/flashgate/flashgate/settler/relay"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func checker(t *testing.T, e *testenv.Env) *reconcile.Reconciler {
	t.Helper()
	rc, err := reconcile.New(reconcile.Config{OrphanAge: time.Hour}, reconcile.Deps{Redis: e.RDB, PG: e.PG, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// repairer has a relay and a recoverer that waits for a reference settler.
func repairer(t *testing.T, e *testenv.Env, st *testenv.Settler, orphanAge time.Duration, cfg reconcile.Config) *reconcile.Reconciler {
	t.Helper()
	kcl := testenv.Producer(t)
	rl, err := relay.New(relay.Config{MinAge: orphanAge}, e.RDB, e.PG, kcl, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	adm, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adm.Close)
	rec, err := recovery.New(recovery.Config{CatchUpTimeout: 20 * time.Second}, e.RDB, e.PG,
		&recovery.KafkaCatchUp{Client: adm, Group: st.Group, Topic: kafkaopt.ClaimsTopic}, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OrphanAge = orphanAge
	rc, err := reconcile.New(cfg, reconcile.Deps{Redis: e.RDB, PG: e.PG, Relay: rl, Recoverer: rec, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func sku(r *reconcile.Report, name string) reconcile.SKU {
	for _, s := range r.SKUs {
		if s.SKU == name {
			return s
		}
	}
	return reconcile.SKU{}
}

func claimN(t *testing.T, e *testenv.Env, c *testenv.Campaign, skuName string, from, n int) {
	t.Helper()
	ctx := testenv.Ctx(t, 30*time.Second)
	for i := from; i < from+n; i++ {
		a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, skuName, fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i))
		if err != nil || a.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: code %d, err %v", i, a.Code, err)
		}
	}
}

func mustCheck(t *testing.T, rc *reconcile.Reconciler, id string) *reconcile.Report {
	t.Helper()
	r, err := rc.Campaign(testenv.Ctx(t, 20*time.Second), id)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Stable {
		t.Fatalf("check of an idle campaign not stable: %+v", r)
	}
	return r
}

// A clean sale reconciles to zero drift at every stage: while claims are in flight
// ("settling", the difference is exactly the in-flight claims), once they are rows
// ("in_sync"), and after some vouchers expired (the released value is accounted for).
func TestCleanSaleHasNoDrift(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 10, Value: 50}, {SKU: "rp-100", Stock: 5, Value: 100}}})
	claimN(t, e, c, "rp-50", 0, 6)
	claimN(t, e, c, "rp-100", 100, 3)
	rc := checker(t, e)

	r := mustCheck(t, rc, c.ID)
	if r.State != reconcile.StateSettling || r.Drift != 0 || r.InFlight != 9 || r.Rows != 0 || r.Budget.Drift != 0 || r.Budget.InFlightValue != 600 {
		t.Fatalf("in flight: %+v", r)
	}
	if s := sku(r, "rp-50"); s.Accepted != 6 || s.InFlight != 6 || s.StockLeft != 4 || s.Drift != 0 || s.StockDrift != 0 {
		t.Fatalf("rp-50 in flight: %+v", s)
	}

	if _, err := testenv.SettleOutbox(ctx, e.RDB, e.PG, c.ID); err != nil {
		t.Fatal(err)
	}
	r = mustCheck(t, rc, c.ID)
	if r.State != reconcile.StateInSync || r.Drift != 0 || r.InFlight != 0 || r.Rows != 9 || r.LedgerGap != 0 ||
		r.Budget.Drift != 0 || r.Budget.Reserved != 600 || r.Budget.Spent != 600 {
		t.Fatalf("settled: %+v", r)
	}
	if !r.BusinessLineStable || r.BusinessLineBudget.Drift != 0 || r.BusinessLineBudget.Spent != 600 {
		t.Fatalf("business line: %+v", r.BusinessLineBudget)
	}

	if _, err := e.PG.Exec(ctx, `UPDATE claims SET expires_at = now() - interval '1 second' WHERE campaign_id = $1 AND sku = 'rp-100'`, c.ID); err != nil {
		t.Fatal(err)
	}
	x, err := expire.New(expire.Config{Campaigns: []string{c.ID}}, e.RDB, e.PG, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := x.Once(ctx); err != nil || st.Expired != 3 {
		t.Fatalf("expire: %+v %v", st, err)
	}
	r = mustCheck(t, rc, c.ID)
	if r.State != reconcile.StateInSync || r.Budget.Drift != 0 || r.Budget.Spent != 300 || r.Budget.Released != 300 ||
		r.Budget.ReleasedBooks != 300 || r.Budget.PendingRelease != 0 || r.BusinessLineBudget.Drift != 0 {
		t.Fatalf("after expiry: %+v, business line %+v", r, r.BusinessLineBudget)
	}
}

// A business line's books are the books of all its campaigns: with two campaigns on
// one line, one settled and one in flight, each campaign's check sees the line's whole
// spend (both campaigns' rows and in-flight claims) and no drift, and a campaign on
// another line is not counted in it.
func TestBusinessLineBooksSpanItsCampaigns(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	bl := e.BusinessLine(1_000_000)
	a := e.Campaign(testenv.Spec{BusinessLine: bl, SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 10, Value: 50}}})
	b := e.Campaign(testenv.Spec{BusinessLine: bl, SKUs: []testenv.SKU{{SKU: "rp-100", Stock: 10, Value: 100}}})
	other := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 10, Value: 50}}})
	claimN(t, e, a, "rp-50", 0, 4)     // 200, settled below
	claimN(t, e, b, "rp-100", 100, 3)  // 300, left in flight
	claimN(t, e, other, "rp-50", 0, 5) // 250, another line
	for _, c := range []*testenv.Campaign{a, other} {
		if _, err := testenv.SettleOutbox(ctx, e.RDB, e.PG, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	rc := checker(t, e)
	for _, id := range []string{a.ID, b.ID} {
		r := mustCheck(t, rc, id)
		bb := r.BusinessLineBudget
		if !r.BusinessLineStable || bb.Spent != 500 || bb.Reserved != 200 || bb.InFlightValue != 300 || bb.Drift != 0 {
			t.Fatalf("campaign %s: business line %+v; want spent 500 = 200 in the books + 300 in flight", id, bb)
		}
	}
}

// Injected faults are reported with their exact size, and repaired: counters that
// disagree with the books are rebuilt from them; an orphan is re-published and settled.
func TestInjectedDriftIsExactAndRepaired(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 90*time.Second)
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 10, Value: 50}}})
	claimN(t, e, c, "rp-50", 0, 4)
	if _, err := testenv.SettleOutbox(ctx, e.RDB, e.PG, c.ID); err != nil {
		t.Fatal(err)
	}
	st := testenv.StartSettler(t, e.RDB, e.PG, c.ID)
	rc := checker(t, e)

	// Phantom claims: two units and their value counted in Redis that no claim took.
	skuKey, meta, bl := rkeys.SKU(c.ID, "rp-50"), rkeys.Meta(c.ID), rkeys.BusinessLine(c.BusinessLine)
	pipe := e.RDB.TxPipeline()
	pipe.HIncrBy(ctx, skuKey, "taken", 2)
	pipe.HIncrBy(ctx, skuKey, "stock", -2)
	pipe.HIncrBy(ctx, meta, "taken", 2)
	pipe.HIncrBy(ctx, meta, "spent", 100)
	pipe.HIncrBy(ctx, bl, "spent", 100)
	// And a budget-only fault: 30 of the campaign's spent vanished.
	pipe.HIncrBy(ctx, meta, "spent", -30)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	r := mustCheck(t, rc, c.ID)
	s := sku(r, "rp-50")
	if r.State != reconcile.StateDrift || r.Drift != 2 || s.Drift != 2 || s.StockDrift != 0 || r.Budget.Drift != 70 ||
		r.BusinessLineBudget.Drift != 100 || r.LedgerGap != 0 {
		t.Fatalf("injected: state %s drift %d sku %+v budget drift %d business line drift %d",
			r.State, r.Drift, s, r.Budget.Drift, r.BusinessLineBudget.Drift)
	}
	// The stock alone off by one: stock left disagrees with total − accepted.
	if err := e.RDB.HIncrBy(ctx, skuKey, "stock", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if r := mustCheck(t, rc, c.ID); sku(r, "rp-50").StockDrift != 1 {
		t.Fatalf("stock drift %+v, want 1", sku(r, "rp-50"))
	}

	// An orphan: a claim accepted and never published (its gateway died, its client
	// heard no 200). The relay voids it (DESIGN.md "What is durable when"): it is not
	// republished, and the counters are rebuilt without it.
	claimN(t, e, c, "rp-50", 100, 1)
	time.Sleep(250 * time.Millisecond)

	rp := repairer(t, e, st, 200*time.Millisecond, reconcile.Config{})
	after, err := rp.Repair(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Before.Orphans != 1 || after.Republished != 0 || after.Rebuilt == nil {
		t.Fatalf("repair: before %+v, republished %d, rebuilt %+v", after.Before, after.Republished, after.Rebuilt)
	}
	if after.Drift != 0 || after.Budget.Drift != 0 || after.BusinessLineBudget.Drift != 0 || sku(after, "rp-50").StockDrift != 0 {
		t.Fatalf("after repair: %+v", after)
	}
	// The voided orphan never reaches Postgres; its unit is back on sale.
	testenv.Eventually(t, 20*time.Second, "the campaign is in sync without the orphan", func() bool {
		r, err := rc.Campaign(ctx, c.ID)
		return err == nil && r.State == reconcile.StateInSync && r.Rows == 4
	})
	r = mustCheck(t, rc, c.ID)
	if s := sku(r, "rp-50"); s.Accepted != 4 || s.StockLeft != 6 || r.Budget.Spent != 200 || r.BusinessLineBudget.Spent != 200 {
		t.Fatalf("rebuilt counters: sku %+v, budget %+v, business line %+v", s, r.Budget, r.BusinessLineBudget)
	}
}

// Run's pass repairs a drift only once it has persisted, unchanged, for RepairAfter
// stable checks; in between it only reports it.
func TestOnceRepairsPersistentDrift(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	c := e.Campaign(testenv.Spec{})
	claimN(t, e, c, "rp-50", 0, 3)
	if _, err := testenv.SettleOutbox(ctx, e.RDB, e.PG, c.ID); err != nil {
		t.Fatal(err)
	}
	st := testenv.StartSettler(t, e.RDB, e.PG, c.ID)
	rp := repairer(t, e, st, time.Hour, reconcile.Config{RepairAfter: 2, Campaigns: []string{c.ID}})
	if err := e.RDB.HIncrBy(ctx, rkeys.SKU(c.ID, "rp-50"), "stock", 3).Err(); err != nil {
		t.Fatal(err)
	}
	for pass, wantDrift := range []int64{3, 0} {
		rs, err := rp.Once(ctx)
		if err != nil || len(rs) != 1 {
			t.Fatalf("pass %d: %d reports, %v", pass, len(rs), err)
		}
		r := rs[0]
		if got := sku(r, "rp-50").StockDrift; got != wantDrift {
			t.Fatalf("pass %d: stock drift %d, want %d (state %s, rebuilt %v)", pass, got, wantDrift, r.State, r.Rebuilt != nil)
		}
		if (pass == 1) != (r.Rebuilt != nil) {
			t.Fatalf("pass %d: rebuilt %v; want a rebuild on the second pass only", pass, r.Rebuilt != nil)
		}
	}
	if got, _ := e.RDB.HGet(ctx, rkeys.SKU(c.ID, "rp-50"), "stock").Int64(); got != 7 {
		t.Fatalf("stock %d after the repair, want 7", got)
	}
}

// A campaign Redis does not know is "missing", not drifting.
func TestMissingCampaign(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 20*time.Second)
	c := e.Campaign(testenv.Spec{})
	// Before any claim (no outbox stream yet) a campaign is in sync.
	if r := mustCheck(t, checker(t, e), c.ID); r.State != reconcile.StateInSync || r.Drift != 0 || sku(r, "rp-50").StockLeft != 10 {
		t.Fatalf("fresh campaign: %+v", r)
	}
	if err := e.RDB.Del(ctx, rkeys.Meta(c.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	r, err := checker(t, e).Campaign(ctx, c.ID)
	if err != nil || r.State != reconcile.StateMissing {
		t.Fatalf("got %+v, %v; want state missing", r, err)
	}
	if _, err := checker(t, e).Campaign(ctx, "no-such-campaign-"+testenv.ID(t, "x")); err != reconcile.ErrNotFound {
		t.Fatalf("unknown campaign: %v, want ErrNotFound", err)
	}
}

func TestConfigErrors(t *testing.T) {
	e := testenv.New(t)
	for _, tc := range []struct {
		cfg  reconcile.Config
		want string
	}{
		{reconcile.Config{Interval: time.Millisecond}, "Interval"},
		{reconcile.Config{Attempts: 1000}, "Attempts"},
		{reconcile.Config{OrphanAge: -time.Second}, "OrphanAge"},
		{reconcile.Config{RepairAfter: -1}, "RepairAfter"},
	} {
		if _, err := reconcile.New(tc.cfg, reconcile.Deps{Redis: e.RDB, PG: e.PG}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if _, err := reconcile.New(reconcile.Config{}, reconcile.Deps{Redis: e.RDB}); err == nil {
		t.Error("New without Postgres: no error")
	}
}
