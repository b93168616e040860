package recovery_test

import (
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Issue 21 (suspected): an admin write of a business line's budget while a recovery
// fences it must not lift the fence (the fence is the absence of the budget field).
// While fenced a claim stays 503 (NOT_WARM, nothing taken); the new budget is applied
// when the rebuild ends, not lost.
func TestBudgetPutDoesNotLiftTheFence(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	pr := startPrivateRedis(t)
	rdb := pr.client()
	e := base.With(rdb)
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 5, Value: 50}}})
	if a := try(t, rdb, c, "rp-50", "u-0", "rq-0"); a.Code != claim.CodeAccepted {
		t.Fatalf("claim before: %+v", a)
	}
	if _, err := testenv.SettleOutbox(ctx, rdb, e.PG, c.ID); err != nil {
		t.Fatal(err)
	}
	g := testenv.NewGate()
	rec := newRecoverer(t, rdb, e, c.BusinessLine, g)
	done := make(chan error, 1)
	go func() {
		_, err := rec.RecoverBusinessLine(ctx, c.BusinessLine)
		done <- err
	}()
	<-g.Entered
	if err := e.Cat.PutBusinessLine(ctx, c.BusinessLine, 777_777); err != nil {
		t.Fatal(err)
	}
	if ok, _ := rdb.HExists(ctx, rkeys.BusinessLine(c.BusinessLine), "budget").Result(); ok {
		t.Fatal("the budget PUT wrote the budget field while the business line was fenced: the fence is lifted")
	}
	if a := try(t, rdb, c, "rp-50", "u-1", "rq-1"); a.Code != claim.CodeNotWarm {
		t.Fatalf("claim while fenced, after the budget PUT: code %d, want NOT_WARM %d", a.Code, claim.CodeNotWarm)
	}
	close(g.Open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := rdb.HMGet(ctx, rkeys.BusinessLine(c.BusinessLine), "budget", "spent", "budget_next").Val(); got[0] != "777777" || got[1] != "50" || got[2] != nil {
		t.Fatalf("after the rebuild: budget/spent/budget_next %v, want the PUT's budget 777777, 50 and none", got)
	}
	if a := try(t, rdb, c, "rp-50", "u-1", "rq-1"); a.Code != claim.CodeAccepted {
		t.Fatalf("claim after the rebuild: %+v", a)
	}
	// Unfenced: a PUT writes the budget at once again.
	if err := e.Cat.PutBusinessLine(ctx, c.BusinessLine, 888_888); err != nil {
		t.Fatal(err)
	}
	if got := rdb.HGet(ctx, rkeys.BusinessLine(c.BusinessLine), "budget").Val(); got != "888888" {
		t.Fatalf("budget after an unfenced PUT: %s", got)
	}
}
