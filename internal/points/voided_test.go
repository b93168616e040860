package points_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestGiveBackSpentOnce: a spend took 60 points from a lot already past its expiry and
// 40 from a live one; its give-back (a void after confirmation) restores the live lot's
// 40 and not the expired lot's 60 (they would have expired anyway), writes one
// give_back row and one event, and a repeat gives nothing. A Redis step that failed
// after the record committed is re-driven once; a balance rebuilt from the ledger keeps
// the give-back once; the reservation is not held again. A give-back before the spend
// is in the ledger waits.
func TestGiveBackSpentOnce(t *testing.T) {
	e := newEnv(t, 0)
	ctx := context.Background()
	task, key := e.task(t, 1000, 100_000)
	user := testenv.ID(t, "u")
	grant := func(at time.Time, amount int64) {
		e.clk.set(at)
		if _, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: amount, GrantID: testenv.ID(t, "g")}); err != nil {
			t.Fatal(err)
		}
	}
	grant(time.Now().Add(-721*time.Hour), 60) // lifetime 720h: expired an hour ago, not yet by the expirer
	grant(time.Now(), 300)
	r := testenv.ID(t, "c") + ":r1"
	if _, err := e.svc.GiveBackSpent(ctx, user, r, "claim-1"); err == nil {
		t.Fatal("a give-back before the spend: no error, want it to wait")
	}
	if got, _ := e.svc.Reserve(ctx, user, r, "t", 100); got != points.Reserved {
		t.Fatal(got)
	}
	if err := e.svc.Spend(ctx, user, r, "claim-1", 100); err != nil {
		t.Fatal(err)
	}
	if ledger, lots, _, hot, _ := e.books(t, user); ledger != 260 || lots != 260 || hot != 260 {
		t.Fatalf("after the spend: ledger %d lots %d hot %d, want 260 each", ledger, lots, hot)
	}

	// The Redis step fails once the record is committed (a Redis that does not answer).
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { dead.Close() })
	broken, err := points.New(e.pg, dead, points.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broken.GiveBackSpent(ctx, user, r, "claim-1"); err == nil {
		t.Fatal("give-back with Redis down: no error")
	}
	ledger, lots, _, hot, _ := e.books(t, user)
	if ledger != 300 || lots != 300 || hot != 260 {
		t.Fatalf("record committed, Redis not: ledger %d lots %d hot %d, want 300 300 260", ledger, lots, hot)
	}
	for i, want := range []int64{0, 0} { // the record says 40 was given back by the first call
		n, err := e.svc.GiveBackSpent(ctx, user, r, "claim-1")
		if err != nil || n != want {
			t.Fatalf("re-driven give-back %d: %d %v, want %d", i, n, err, want)
		}
	}
	balanced := func(want int64) {
		t.Helper()
		ledger, lots, _, hot, built := e.books(t, user)
		if ledger != want || lots != want || hot != want || !built {
			t.Fatalf("ledger %d lots %d hot %d (built %v), want %d each", ledger, lots, hot, built, want)
		}
	}
	balanced(300)
	var rows, events, sum int64
	if err := e.pg.QueryRow(ctx, `SELECT count(*), coalesce(sum(delta), 0) FROM points_ledger WHERE source_id = $1 AND kind = 'give_back'`, r).Scan(&rows, &sum); err != nil || rows != 1 || sum != 40 {
		t.Fatalf("give_back rows %d worth %d (%v), want 1 worth 40", rows, sum, err)
	}
	if err := e.pg.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'points_given_back' AND body ->> 'reservation' = $1`, r).Scan(&events); err != nil || events != 1 {
		t.Fatalf("points_given_back events %d (%v), want 1", events, err)
	}

	// The reservation is not held again: a retry of the revoked request replays.
	if got, err := e.svc.Reserve(ctx, user, r, "t2", 100); err != nil || got != points.AlreadySpent {
		t.Fatalf("reserve of a given-back spend: %s %v, want %s", got, err, points.AlreadySpent)
	}
	balanced(300)
	// A late spend confirm of the same reservation takes nothing.
	if err := e.svc.Spend(ctx, user, r, "claim-1", 100); err != nil {
		t.Fatal(err)
	}
	balanced(300)

	// A Redis that lost the balance rebuilds it with the give-back once.
	if err := e.rdb.HSet(ctx, rkeys.Points(user), "ok", "0000previousrun", "bal", 999).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Rebuild(ctx, user); err != nil {
		t.Fatal(err)
	}
	if n, err := e.svc.GiveBackSpent(ctx, user, r, "claim-1"); err != nil || n != 0 {
		t.Fatalf("give-back after a rebuild: %d %v, want 0", n, err)
	}
	balanced(300)
	if err := e.pg.QueryRow(ctx, `SELECT count(*) FROM points_ledger WHERE source_id = $1 AND kind = 'give_back'`, r).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("give_back rows %d (%v), want 1", rows, err)
	}

}
