package points_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/testenv"
)

// fund grants amounts to user a minute apart (so each lot expires after the one before)
// and returns the grant ids.
func (e *env) fund(t *testing.T, user string, amounts ...int64) []string {
	t.Helper()
	task, key := e.task(t, 1000, 100_000)
	var ids []string
	for _, a := range amounts {
		e.clk.set(e.clk.now().Add(time.Minute))
		id := testenv.ID(t, "g")
		if _, err := e.svc.Grant(context.Background(), []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: a, GrantID: id}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// One user with points for one item sends two claims at once: one reservation holds,
// the other is insufficient_points; a retry of the winner reserves nothing more.
func TestTwoReservationsAtOnceOneWins(t *testing.T) {
	e := newEnv(t, 0)
	user := testenv.ID(t, "u")
	e.fund(t, user, 500)
	ctx := context.Background()
	camp := testenv.ID(t, "camp")
	out := make([]string, 2)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if out[i], err = e.svc.Reserve(ctx, user, camp+":req-"+string(rune('a'+i)), "t1", 500); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if !(out[0] == points.Reserved && out[1] == points.Insufficient || out[1] == points.Reserved && out[0] == points.Insufficient) {
		t.Fatalf("two claims for one item's points: %v, want one reserved, one insufficient_points", out)
	}
	winner := camp + ":req-a"
	if out[1] == points.Reserved {
		winner = camp + ":req-b"
	}
	if got, _ := e.svc.Reserve(ctx, user, winner, "t1", 500); got != points.Reserved {
		t.Fatalf("retry of the winner: %s", got)
	}
	if hot, _, _ := e.svc.HotBalance(ctx, user); hot != 0 {
		t.Fatalf("spendable after one reservation %d, want 0", hot)
	}
}

// A rejected claim's reservation is given back once; a confirmed one is spent once in
// the ledger and the lots (oldest first) and the hot balance; either end is final.
func TestGiveBackAndSpendExactlyOnce(t *testing.T) {
	e := newEnv(t, 0)
	user := testenv.ID(t, "u")
	lots := e.fund(t, user, 400, 300) // two lots; the first expires first (granted first)
	ctx := context.Background()
	c := testenv.ID(t, "c")
	if got, _ := e.svc.Reserve(ctx, user, c+":r1", "t1", 500); got != points.Reserved {
		t.Fatal(got)
	}
	for i, want := range []bool{true, false} {
		if ok, err := e.svc.GiveBack(ctx, user, c+":r1", "t1"); err != nil || ok != want {
			t.Fatalf("give back %d: %v %v, want %v", i, ok, err, want)
		}
	}
	// A retry of a rejected or voided claim is decided anew by claim.lua, so its
	// reservation is held anew (by the new attempt); the old attempt's late give-back
	// then releases nothing, the new attempt's does.
	if got, _ := e.svc.Reserve(ctx, user, c+":r1", "t2", 500); got != points.Reserved {
		t.Fatalf("reserve after give back: %s, want held anew", got)
	}
	if ok, _ := e.svc.GiveBack(ctx, user, c+":r1", "t1"); ok {
		t.Fatal("the first attempt's give-back released the second attempt's hold")
	}
	if ok, _ := e.svc.GiveBack(ctx, user, c+":r1", "t2"); !ok {
		t.Fatal("the second attempt could not give its hold back")
	}
	if got, _ := e.svc.Reserve(ctx, user, c+":r2", "t1", 500); got != points.Reserved {
		t.Fatal(got)
	}
	for i := 0; i < 3; i++ {
		if err := e.svc.Spend(ctx, user, c+":r2", c+"-r2", 500); err != nil {
			t.Fatalf("spend %d: %v", i, err)
		}
	}
	if ok, _ := e.svc.GiveBack(ctx, user, c+":r2", "t1"); ok {
		t.Fatal("a spent reservation was given back")
	}
	ledger, left, rows, hot, built := e.books(t, user)
	if ledger != 200 || left != 200 || rows != 3 || !built || hot != 200 {
		t.Fatalf("books: ledger %d lots %d rows %d hot %d/%v, want 200 200 3 200", ledger, left, rows, hot, built)
	}
	acct, _ := e.svc.Account(ctx, user)
	if len(acct.Expiring) != 1 || acct.Expiring[0].Remaining != 200 || acct.Expiring[0].GrantID != lots[1] {
		t.Fatalf("lots after spending 500 of 400 (older) + 300: %+v, want the older used up and 200 left of %s", acct.Expiring, lots[1])
	}
}

// A frozen account reserves nothing (blocked); unfrozen it does again. The freeze
// survives a rebuild of the hot balance (it is read from the record).
func TestFrozenAccountIsBlocked(t *testing.T) {
	e := newEnv(t, 0)
	user := testenv.ID(t, "u")
	e.fund(t, user, 100)
	ctx := context.Background()
	c := testenv.ID(t, "c")
	if _, err := e.svc.SetFrozen(ctx, user, true, "abnormal gains", "test"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.Reserve(ctx, user, c+":f1", "t1", 10); got != points.Blocked {
		t.Fatalf("frozen: %s, want blocked", got)
	}
	if err := e.rdb.HSet(ctx, "fg:{u:"+user+"}:pts", "ok", "0000previousrun").Err(); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.Reserve(ctx, user, c+":f2", "t1", 10); got != points.Blocked {
		t.Fatalf("frozen after a rebuild: %s, want blocked", got)
	}
	if _, err := e.svc.SetFrozen(ctx, user, false, "reviewed", "test"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.Reserve(ctx, user, c+":f3", "t1", 10); got != points.Reserved {
		t.Fatalf("unfrozen: %s", got)
	}
	acct, _ := e.svc.Account(ctx, user)
	if acct.Frozen || acct.Reason != "reviewed" {
		t.Fatalf("account %+v", acct)
	}
	var audited int
	if err := e.pg.QueryRow(ctx, `SELECT count(*) FROM risk_audit WHERE scope = $1 AND actor = 'test'
		AND action IN ('points.freeze', 'points.unfreeze')`, "points:"+user).Scan(&audited); err != nil || audited != 2 {
		t.Fatalf("audit rows %d (%v), want 2", audited, err)
	}
}

// A rebuild keeps the reservations still held in Redis held, and drops those whose
// spend is already in the ledger (a restart lost the hot confirm).
func TestRebuildKeepsHeldReservations(t *testing.T) {
	e := newEnv(t, 0)
	user := testenv.ID(t, "u")
	e.fund(t, user, 1000)
	ctx := context.Background()
	c := testenv.ID(t, "c")
	for _, r := range []string{c + ":h1", c + ":h2"} {
		if got, _ := e.svc.Reserve(ctx, user, r, "t1", 300); got != points.Reserved {
			t.Fatal(got)
		}
	}
	if err := e.svc.Spend(ctx, user, c+":h2", c+"-h2", 300); err != nil {
		t.Fatal(err)
	}
	// What a restart that lost the hot confirm of h2 leaves: h2 still held, old stamp.
	key := "fg:{u:" + user + "}:pts"
	if err := e.rdb.HSet(ctx, key, "rsv:"+c+":h2", 300, "bal", 1000, "held", 600, "ok", "0000previousrun").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HDel(ctx, key, "done:"+c+":h2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Rebuild(ctx, user); err != nil {
		t.Fatal(err)
	}
	if hot, _, _ := e.svc.HotBalance(ctx, user); hot != 400 { // 1000 - 300 spent - 300 held
		t.Fatalf("spendable after the rebuild %d, want 400", hot)
	}
	if err := e.svc.Spend(ctx, user, c+":h2", c+"-h2", 300); err != nil { // the loop's retry
		t.Fatal(err)
	}
	if hot, _, _ := e.svc.HotBalance(ctx, user); hot != 400 {
		t.Fatalf("a repeated confirm after the rebuild took the price twice: %d, want 400", hot)
	}
}

// The report attributes a spend to the tasks whose lots it used (oldest first).
func TestReportByTask(t *testing.T) {
	e := newEnv(t, 0)
	user := testenv.ID(t, "u")
	ctx := context.Background()
	c := testenv.ID(t, "c")
	e.fund(t, user, 400)
	e.fund(t, user, 600)
	if got, _ := e.svc.Reserve(ctx, user, c+":r", "t1", 500); got != points.Reserved {
		t.Fatal(got)
	}
	if err := e.svc.Spend(ctx, user, c+":r", c+"-claim", 500); err != nil {
		t.Fatal(err)
	}
	rep, err := e.svc.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mine []points.TaskFigures
	for _, f := range rep.Tasks {
		var n int
		_ = e.pg.QueryRow(ctx, `SELECT count(*) FROM points_lots WHERE task_id = $1 AND user_id = $2`, f.Task, user).Scan(&n)
		if n > 0 {
			mine = append(mine, f)
		}
	}
	if len(mine) != 2 {
		t.Fatalf("tasks of the user in the report: %+v", mine)
	}
	byIssued := map[int64]points.TaskFigures{mine[0].Issued: mine[0], mine[1].Issued: mine[1]}
	if f := byIssued[400]; f.Spent != 400 || f.ConsumptionRate != 1 {
		t.Fatalf("older task: %+v, want all 400 spent", f)
	}
	if f := byIssued[600]; f.Spent != 100 || f.ConsumptionRate != 100.0/600 {
		t.Fatalf("newer task: %+v, want 100 of 600 spent", f)
	}
}
