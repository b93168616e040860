package recovery_test

import (
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Issue 21.5: a campaign (of a new business line) created shortly (here 1.5 s) before
// Redis lost its data is rebuilt too - the recoverer works from Postgres's list of live
// campaigns as it is then, not from the list it cached before the campaign existed.
func TestCampaignCreatedJustBeforeTheLossIsRebuilt(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	pr := startPrivateRedis(t)
	rdb := pr.client()
	e := base.With(rdb)
	bl := e.BusinessLine(1_000_000_000)
	old := e.Campaign(testenv.Spec{BusinessLine: bl})
	bl2 := testenv.ID(t, "bl") // created after the recoverer's first list
	// A list cached for a minute: without a fresh list on a full pass the new campaign
	// would be missed.
	rec, err := recovery.New(recovery.Config{Interval: 50 * time.Millisecond, ListEvery: time.Minute,
		CatchUpTimeout: 10 * time.Second, BusinessLines: []string{bl, bl2}}, rdb, e.PG, newOpenGate(), quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Once(ctx); err != nil { // first sight: lists `old`, stamps it
		t.Fatal(err)
	}
	if err := e.Cat.PutBusinessLine(ctx, bl2, 1_000_000_000); err != nil {
		t.Fatal(err)
	}
	fresh := e.Campaign(testenv.Spec{BusinessLine: bl2, SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 4, Value: 50}}})
	first := try(t, rdb, fresh, "rp-50", "u-1", "rq-1")
	if first.Code != claim.CodeAccepted {
		t.Fatalf("claim on the new campaign: %+v", first)
	}
	if _, err := testenv.SettleOutbox(ctx, rdb, e.PG, fresh.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	out, err := rec.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := map[string]bool{}
	for _, o := range out {
		for _, c := range o.Campaigns {
			rebuilt[c.Campaign] = true
		}
	}
	if !rebuilt[fresh.ID] || !rebuilt[old.ID] {
		t.Fatalf("rebuilt %v; want both %s and the new %s", rebuilt, old.ID, fresh.ID)
	}
	if got := rdb.HMGet(ctx, rkeys.SKU(fresh.ID, "rp-50"), "stock", "taken").Val(); got[0] != "3" || got[1] != "1" {
		t.Fatalf("new campaign's SKU after the rebuild: stock/taken %v, want 3/1", got)
	}
	if a := try(t, rdb, fresh, "rp-50", "u-1", "rq-1"); a.Code != claim.CodeAccepted || a.ClaimID != first.ClaimID {
		t.Fatalf("retry after the rebuild: %+v, want the original claim %s", a, first.ClaimID)
	}
	if f, err := rec.Detect(ctx); err != nil || len(f) != 0 {
		t.Fatalf("after the rebuild: findings %v %v", f, err)
	}
}

func newOpenGate() recovery.CatchUp {
	g := testenv.NewGate()
	close(g.Open)
	return g
}
