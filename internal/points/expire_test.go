package points_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestExpiryOldestFirstWithPartialSpends: two lots, the older partly spent (a spend
// takes the oldest lot first); the expiry takes what the older has left once it is due,
// writes its ledger row and a points_expired event, and leaves the newer lot alone. The
// newer lot, due while a claim in flight holds some of it, waits; once the hold is given
// back it expires whole. A repeated pass changes nothing; ledger = lots = hot balance
// throughout.
func TestExpiryOldestFirstWithPartialSpends(t *testing.T) {
	e := newEnv(t, 0)
	ctx := context.Background()
	task := testenv.ID(t, "task")
	res, err := e.svc.PutTask(ctx, task, &points.TaskPut{Name: "t", PerGrantMax: 1000, PerUserDailyMax: 10_000, Lifetime: "5s"})
	if err != nil {
		t.Fatal(err)
	}
	user := testenv.ID(t, "u")
	now := time.Now()
	grant := func(at time.Time, amount int64) string {
		e.clk.set(at)
		id := testenv.ID(t, "g")
		if _, err := e.svc.Grant(ctx, []byte(res.Key), &points.GrantReq{UserID: user, Task: task, Amount: amount, GrantID: id}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	older := grant(now.Add(-20*time.Second), 400) // expires now-15s
	newer := grant(now, 300)                      // expires now+5s
	c := testenv.ID(t, "c")
	if got, _ := e.svc.Reserve(ctx, user, c+":r1", "t", 100); got != points.Reserved {
		t.Fatal(got)
	}
	if err := e.svc.Spend(ctx, user, c+":r1", c+"-1", 100); err != nil {
		t.Fatal(err)
	}
	balanced := func(want int64) {
		t.Helper()
		ledger, left, _, hot, built := e.books(t, user)
		if ledger != want || left != want || !built || hot != want {
			t.Fatalf("ledger %d lots %d hot %d (built %v), want %d each", ledger, left, hot, built, want)
		}
	}
	balanced(600)

	at := now
	x, err := points.NewExpirer(e.svc, points.ExpireConfig{Now: func() time.Time { return at }}, testenv.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	expiredOf := func(grant string) int64 {
		var n int64
		_ = e.pg.QueryRow(ctx, `SELECT coalesce(-sum(delta), 0) FROM points_ledger WHERE source_id = $1 AND kind = 'expire'`, grant).Scan(&n)
		return n
	}
	if _, err := x.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if got := expiredOf(older); got != 300 {
		t.Fatalf("older lot expired %d, want the 300 its partial spend left", got)
	}
	if got := expiredOf(newer); got != 0 {
		t.Fatalf("newer lot expired %d before its time", got)
	}
	balanced(300)
	var events int
	if err := e.pg.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'points_expired' AND body ->> 'grant_id' = $1
		AND (body ->> 'points')::bigint = 300`, older).Scan(&events); err != nil || events != 1 {
		t.Fatalf("points_expired events for the older lot: %d (%v), want 1", events, err)
	}

	// The newer lot falls due while a claim in flight holds 250 of its 300: it waits.
	if got, _ := e.svc.Reserve(ctx, user, c+":r2", "t2", 250); got != points.Reserved {
		t.Fatal(got)
	}
	at = now.Add(10 * time.Second)
	if _, err := x.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if got := expiredOf(newer); got != 0 {
		t.Fatalf("a lot held by a claim in flight expired %d", got)
	}
	if ok, _ := e.svc.GiveBack(ctx, user, c+":r2", "t2"); !ok {
		t.Fatal("give back")
	}
	for i := 0; i < 2; i++ {
		if _, err := x.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := expiredOf(newer); got != 300 {
		t.Fatalf("newer lot expired %d, want 300", got)
	}
	balanced(0)

	// A Redis that lost the hot balance rebuilds it from the ledger, expiries included.
	if err := e.rdb.HSet(ctx, "fg:{u:"+user+"}:pts", "ok", "0000previousrun", "bal", 999).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Rebuild(ctx, user); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Once(ctx); err != nil {
		t.Fatal(err)
	}
	balanced(0)
}

// TestExpiringPaged: the reminders list pages through every lot expiring within the
// window, soonest first, each once; lots outside the window, used up or already expired
// are not in it; bad input names the field.
func TestExpiringPaged(t *testing.T) {
	e := newEnv(t, 0)
	ctx := context.Background()
	task := testenv.ID(t, "task")
	res, err := e.svc.PutTask(ctx, task, &points.TaskPut{Name: "t", PerGrantMax: 1000, PerUserDailyMax: 100_000, Lifetime: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	user := testenv.ID(t, "u")
	base := time.Now().Add(100 * 24 * time.Hour) // far from every other test's lots
	var want []string
	for i := 0; i < 7; i++ {
		e.clk.set(base.Add(time.Duration(i) * time.Minute))
		id := testenv.ID(t, "g")
		if _, err := e.svc.Grant(ctx, []byte(res.Key), &points.GrantReq{UserID: user, Task: task, Amount: int64(10 + i), GrantID: id}); err != nil {
			t.Fatal(err)
		}
		if i < 5 {
			want = append(want, id) // expire within base+1h .. base+1h+4m
		}
	}
	e.clk.set(base.Add(time.Hour - time.Second))
	var got []string
	after := ""
	for pages := 0; pages < 10; pages++ {
		p, err := e.svc.Expiring(ctx, 4*time.Minute+2*time.Second, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range p.Lots {
			if l.UserID == user {
				got = append(got, l.GrantID)
			}
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("paged reminders %v, want %v", got, want)
	}
	for _, tc := range []struct {
		within time.Duration
		after  string
		limit  int
		field  string
	}{{0, "", 10, "within"}, {32 * 24 * time.Hour, "", 10, "within"}, {time.Hour, "", 0, "limit"}, {time.Hour, "", 1001, "limit"}, {time.Hour, "x", 10, "after"}} {
		_, err := e.svc.Expiring(ctx, tc.within, tc.after, tc.limit)
		var fe *points.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Expiring(%s, %q, %d): %v, want a field error naming %s", tc.within, tc.after, tc.limit, err, tc.field)
		}
	}
}
