package push_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/push"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

func benchSegment(b *testing.B, e *testenv.Env, n int) string {
	b.Helper()
	name := testenv.ID(b, "tier")
	var sb strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "%s-u%06d\n", name, i)
	}
	if _, err := e.Cat.PutSegment(testenv.Ctx(b, time.Minute), name, []byte(sb.String())); err != nil {
		b.Fatal(err)
	}
	return name
}

// segment uploads n fresh users as a segment and returns its name and the users.
func segment(t *testing.T, e *testenv.Env, n int) (string, []string) {
	t.Helper()
	name := testenv.ID(t, "tier")
	users := make([]string, n)
	var b strings.Builder
	for i := range users {
		users[i] = fmt.Sprintf("%s-u%06d", name, i)
		b.WriteString(users[i] + "\n")
	}
	if _, err := e.Cat.PutSegment(testenv.Ctx(t, time.Minute), name, []byte(b.String())); err != nil {
		t.Fatal(err)
	}
	return name, users
}

func newService(t *testing.T, e *testenv.Env, cfg push.Config) *push.Service {
	t.Helper()
	s, err := push.New(cfg, e.PG, e.RDB, testenv.Producer(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// counters reads what a campaign's SKUs and meta hold in Redis.
func counters(t *testing.T, e *testenv.Env, campaign string, skus ...string) map[string]string {
	t.Helper()
	ctx := testenv.Ctx(t, 10*time.Second)
	out := map[string]string{}
	m := e.RDB.HGetAll(ctx, rkeys.Meta(campaign)).Val()
	for _, f := range []string{"spent", "taken", "held"} {
		out["meta."+f] = m[f]
	}
	for _, s := range skus {
		h := e.RDB.HGetAll(ctx, rkeys.SKU(campaign, s)).Val()
		for _, f := range []string{"stock", "taken", "held"} {
			out[s+"."+f] = h[f]
		}
	}
	out["outbox"] = fmt.Sprint(e.RDB.XLen(ctx, rkeys.Outbox(campaign)).Val())
	out["users"] = fmt.Sprint(e.RDB.HLen(ctx, rkeys.Users(campaign)).Val())
	return out
}

// A push of 200,000 users over 3 tiers with budget for 150,000 is refused whole,
// 409 budget_exhausted, and takes nothing: no stock, budget or user count moved, no
// claim, no user kept.
func TestPushOverBudgetIsRefusedAndTakesNothing(t *testing.T) {
	e := testenv.New(t)
	c := e.Campaign(testenv.Spec{Budget: 150_000 * 10, SKUs: []testenv.SKU{
		{SKU: "t1", Stock: 100_000, Value: 10}, {SKU: "t2", Stock: 100_000, Value: 10}, {SKU: "t3", Stock: 100_000, Value: 10}}})
	s1, _ := segment(t, e, 70_000)
	s2, _ := segment(t, e, 70_000)
	s3, _ := segment(t, e, 60_000)
	before := counters(t, e, c.ID, "t1", "t2", "t3")
	svc := newService(t, e, push.Config{})
	ctx := testenv.Ctx(t, 2*time.Minute)
	_, _, err := svc.Put(ctx, c.ID, "big", &push.Body{Tiers: map[string]string{s1: "t1", s2: "t2", s3: "t3"}}, "test")
	var rf *push.Refusal
	if !errors.As(err, &rf) || rf.Reason != "budget_exhausted" {
		t.Fatalf("Put: %v; want a refusal budget_exhausted", err)
	}
	if rf.Progress.State != push.StateRefused || rf.Progress.Users.Total != 200_000 || rf.Progress.Users.Issued != 0 {
		t.Fatalf("progress %+v", rf.Progress)
	}
	if after := counters(t, e, c.ID, "t1", "t2", "t3"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("counters moved:\nbefore %v\nafter  %v", before, after)
	}
	var users, claims int
	e.PG.QueryRow(ctx, `SELECT count(*) FROM push_users WHERE campaign_id = $1`, c.ID).Scan(&users)
	e.PG.QueryRow(ctx, `SELECT count(*) FROM claims WHERE campaign_id = $1`, c.ID).Scan(&claims)
	if users != 0 || claims != 0 {
		t.Fatalf("push_users %d, claims %d; want 0 and 0", users, claims)
	}
	// A runner never picks a refused push up again.
	if _, err := svc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if g, err := svc.Get(ctx, c.ID, "big"); err != nil || g.State != push.StateRefused || g.Users.Issued != 0 {
		t.Fatalf("after a run: %+v %v", g, err)
	}
	// Stock short likewise (budget plenty): sold_out, nothing taken.
	c2 := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "t1", Stock: 69_999, Value: 10}}})
	b2 := counters(t, e, c2.ID, "t1")
	if _, _, err := svc.Put(ctx, c2.ID, "big", &push.Body{Tiers: map[string]string{s1: "t1"}}, "test"); !errors.As(err, &rf) || rf.Reason != "sold_out" {
		t.Fatalf("Put over stock: %v; want sold_out", err)
	}
	if a2 := counters(t, e, c2.ID, "t1"); fmt.Sprint(a2) != fmt.Sprint(b2) {
		t.Fatalf("counters moved:\nbefore %v\nafter  %v", b2, a2)
	}
}

// A push within budget whose runner is stopped mid-way (its context cancelled inside
// a batch: claims decided and not yet durable, a batch produced and not counted) and
// resumed by another runner issues each user's voucher exactly once: after settlement
// one claim row per user, counters equal to the rows, and the escrow released.
func TestPushKilledMidWayIssuesEachVoucherOnce(t *testing.T) {
	e := testenv.New(t)
	const perTier = 3000
	c := e.Campaign(testenv.Spec{PerUser: 1, SKUs: []testenv.SKU{
		{SKU: "t1", Stock: 5000, Value: 10}, {SKU: "t2", Stock: 5000, Value: 20}, {SKU: "t3", Stock: 5000, Value: 50}}})
	s1, u1 := segment(t, e, perTier)
	s2, _ := segment(t, e, perTier)
	s3, _ := segment(t, e, perTier)
	settler := testenv.StartSettler(t, e.RDB, e.PG, c.ID)
	// One user already holds a voucher (per-user limit 1): refused user_limit.
	if a, err := testenv.ScriptClaim(testenv.Ctx(t, 10*time.Second), e.RDB, c.ID, "t1", u1[7], "app-rq"); err != nil || a.Code != 1 {
		t.Fatalf("app claim: %+v %v", a, err)
	}
	// ... made durable like a gateway does (or the outbox relay would void it).
	recs, err := testenv.OutboxRecords(testenv.Ctx(t, 10*time.Second), e.RDB, c.ID)
	if err != nil || len(recs) != 1 {
		t.Fatalf("outbox: %v %v", recs, err)
	}
	if err := testenv.ProduceDurable(testenv.Ctx(t, 20*time.Second), e.RDB, testenv.Producer(t), recs...); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 8*time.Minute)
	first := newService(t, e, push.Config{Batch: 500, ScriptBatch: 128, Lease: 500 * time.Millisecond, Owner: "first"})
	body := &push.Body{Tiers: map[string]string{s1: "t1", s2: "t2", s3: "t3"}}
	p, created, err := first.Put(ctx, c.ID, "recall-1", body, "test")
	if err != nil || !created || p.State != push.StateRunning || p.Users.Total != 3*perTier {
		t.Fatalf("Put: %+v created %v err %v", p, created, err)
	}
	// Same body again: the same push. Another body: a conflict.
	if p2, created, err := first.Put(ctx, c.ID, "recall-1", body, "test"); err != nil || created || p2.Users.Total != p.Users.Total {
		t.Fatalf("Put again: %+v %v %v", p2, created, err)
	}
	var ce *push.ConflictError
	if _, _, err := first.Put(ctx, c.ID, "recall-1", &push.Body{Tiers: map[string]string{s1: "t2"}}, "test"); !errors.As(err, &ce) {
		t.Fatalf("Put with other tiers: %v; want a conflict", err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := first.RunOnce(runCtx); done <- err }()
	deadline := time.Now().Add(time.Minute)
	for {
		g, err := first.Get(ctx, c.ID, "recall-1")
		if err != nil {
			t.Fatal(err)
		}
		if g.Users.Issued > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress within a minute")
		}
		time.Sleep(2 * time.Millisecond)
	}
	stop()
	if err := <-done; err == nil {
		t.Fatal("the first runner finished before it was stopped: make the push bigger")
	}
	mid, _ := first.Get(ctx, c.ID, "recall-1")
	if mid.State != push.StateRunning || mid.Users.Pending == 0 {
		t.Fatalf("after the stop: %+v; want running with users pending", mid)
	}
	t.Logf("stopped at %+v", mid.Users)

	second := newService(t, e, push.Config{Batch: 500, ScriptBatch: 128, Lease: 500 * time.Millisecond, Owner: "second"})
	for {
		ran, err := second.RunOnce(ctx)
		if err != nil {
			t.Fatalf("resume: %v", err)
		}
		g, _ := second.Get(ctx, c.ID, "recall-1")
		if g.State == push.StateDone {
			break
		}
		if !ran {
			time.Sleep(100 * time.Millisecond) // the first runner's lease
		}
		if ctx.Err() != nil {
			t.Fatal("not done in time")
		}
	}
	fin, _ := second.Get(ctx, c.ID, "recall-1")
	if fin.Users.Issued != 3*perTier-1 || fin.Users.Refused["user_limit"] != 1 || fin.Users.Pending != 0 {
		t.Fatalf("final %+v; want %d issued, 1 user_limit", fin.Users, 3*perTier-1)
	}
	// Settlement: every issued voucher is one row, one per user, on the push's channel.
	// The reference settler writes one row per transaction: on a loaded machine 9,000
	// take minutes, so the wait lasts while rows keep coming (at most 20 s without a
	// new row, 5 minutes in all).
	var rows, last int64
	stalled, end := time.Now().Add(20*time.Second), time.Now().Add(5*time.Minute)
	for time.Now().Before(stalled) && time.Now().Before(end) {
		e.PG.QueryRow(ctx, `SELECT count(*) FROM claims WHERE campaign_id = $1 AND channel = 'push:recall-1'`, c.ID).Scan(&rows)
		if rows >= fin.Users.Issued {
			break
		}
		if rows > last {
			last, stalled = rows, time.Now().Add(20*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := settler.Err(); rows != fin.Users.Issued {
		t.Fatalf("%d push rows; want %d (settler: %v)", rows, fin.Users.Issued, err)
	}
	var dupUsers, wrongSKU int64
	e.PG.QueryRow(ctx, `SELECT count(*) FROM (SELECT user_id FROM claims WHERE campaign_id = $1 GROUP BY user_id HAVING count(*) > 1) d`, c.ID).Scan(&dupUsers)
	e.PG.QueryRow(ctx, `SELECT count(*) FROM claims k JOIN push_users u ON u.campaign_id = k.campaign_id AND u.user_id = k.user_id
		AND u.push_id = 'recall-1' WHERE k.campaign_id = $1 AND k.channel = 'push:recall-1' AND k.sku <> u.sku`, c.ID).Scan(&wrongSKU)
	if dupUsers != 0 || wrongSKU != 0 {
		t.Fatalf("%d users with two claims, %d claims of another tier's SKU", dupUsers, wrongSKU)
	}
	// Redis: what was taken is exactly the rows (plus the app claim), nothing is held.
	got := counters(t, e, c.ID, "t1", "t2", "t3")
	want := map[string]string{"t1.taken": fmt.Sprint(perTier), "t2.taken": fmt.Sprint(perTier), "t3.taken": fmt.Sprint(perTier),
		"t1.held": "0", "t2.held": "0", "t3.held": "0", "meta.held": "0",
		"meta.spent": fmt.Sprint(perTier * (10 + 20 + 50)), "users": fmt.Sprint(3 * perTier)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q; want %q (all: %v)", k, got[k], v, got)
		}
	}
	if st := e.RDB.HGet(ctx, rkeys.Pushes(c.ID), "st:recall-1").Val(); st != "2" {
		t.Errorf("escrow state %q; want 2 (released)", st)
	}
}

// Bad input is a 400 naming the field and changes nothing.
func TestPushBadInputChangesNothing(t *testing.T) {
	e := testenv.New(t)
	c := e.Campaign(testenv.Spec{})
	seg, _ := segment(t, e, 10)
	svc := newService(t, e, push.Config{})
	ctx := testenv.Ctx(t, time.Minute)
	before := counters(t, e, c.ID, c.SKU)
	for _, tc := range []struct {
		name, pushID, body, field string
	}{
		{"unknown segment", "p1", `{"tiers":{"no-such-segment":"rp-50"}}`, "tiers.no-such-segment"},
		{"unknown sku", "p1", `{"tiers":{"` + seg + `":"no-such-sku"}}`, "tiers." + seg},
		{"empty tiers", "p1", `{"tiers":{}}`, "tiers"},
		{"no tiers", "p1", `{}`, "tiers"},
		{"unknown field", "p1", `{"tiers":{"` + seg + `":"rp-50"},"x":1}`, "x"},
		{"not json", "p1", `tiers`, "tiers"},
		{"bad push_id", "p/1", `{"tiers":{"` + seg + `":"rp-50"}}`, "push_id"},
		{"push_id with a colon", "a:b", `{"tiers":{"` + seg + `":"rp-50"}}`, "push_id"},
		{"push_id too long", strings.Repeat("p", 65), `{"tiers":{"` + seg + `":"rp-50"}}`, "push_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := push.DecodeBody([]byte(tc.body))
			if err == nil {
				_, _, err = svc.Put(ctx, c.ID, tc.pushID, b, "test")
			}
			var fe *push.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err %v; want a field error naming %q", err, tc.field)
			}
		})
	}
	var n int
	e.PG.QueryRow(ctx, `SELECT count(*) FROM pushes WHERE campaign_id = $1`, c.ID).Scan(&n)
	if n != 0 {
		t.Fatalf("%d pushes stored", n)
	}
	if after := counters(t, e, c.ID, c.SKU); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("counters moved: %v -> %v", before, after)
	}
}

// A runner with several batches in flight (Depth) decides users past its cursor before
// the batches below them are counted. Stopped there, it leaves claims decided (accepted,
// some durable) past the cursor that no count includes; the next runner redoes those
// batches and counts each user once: issued = users = rows after settlement, and the
// counters equal the rows. Config bounds: Depth 0 is the default, 65 an error.
func TestPushPipelinedStopPastTheCursorCountsOnce(t *testing.T) {
	e := testenv.New(t)
	if _, err := push.New(push.Config{Depth: 65}, e.PG, e.RDB, testenv.Producer(t), nil); err == nil ||
		!strings.Contains(err.Error(), "Depth") {
		t.Fatalf("Depth 65: %v; want an error naming Depth", err)
	}
	const users = 3000
	c := e.Campaign(testenv.Spec{PerUser: 1, SKUs: []testenv.SKU{{SKU: "t1", Stock: users + 100, Value: 10}}})
	seg, list := segment(t, e, users)
	settler := testenv.StartSettler(t, e.RDB, e.PG, c.ID)
	ctx := testenv.Ctx(t, 6*time.Minute)
	cfg := push.Config{Batch: 150, ScriptBatch: 50, Depth: 4, Lease: 500 * time.Millisecond, Owner: "first"}
	first := newService(t, e, cfg)
	if _, _, err := first.Put(ctx, c.ID, "pipe", &push.Body{Tiers: map[string]string{seg: "t1"}}, "test"); err != nil {
		t.Fatal(err)
	}
	var nonce string
	if err := e.PG.QueryRow(ctx, `SELECT nonce FROM pushes WHERE campaign_id = $1 AND push_id = 'pipe'`, c.ID).Scan(&nonce); err != nil {
		t.Fatal(err)
	}
	// past counts the users after the cursor whose claim is decided (a record A or D).
	past := func() (cursor string, n int) {
		if err := e.PG.QueryRow(ctx, `SELECT cursor_user FROM pushes WHERE campaign_id = $1 AND push_id = 'pipe'`, c.ID).Scan(&cursor); err != nil {
			t.Fatal(err)
		}
		pipe := e.RDB.Pipeline()
		var cmds []interface{ Val() string }
		for _, u := range list {
			if u > cursor {
				cmds = append(cmds, pipe.Get(ctx, rkeys.Request(c.ID, push.RequestID(nonce, u))))
			}
		}
		pipe.Exec(ctx) // redis.Nil for the undecided ones
		for _, cmd := range cmds {
			if v := cmd.Val(); strings.HasPrefix(v, "A\t") || strings.HasPrefix(v, "D\t") {
				n++
			}
		}
		return cursor, n
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := first.RunOnce(runCtx); done <- err }()
	deadline := time.Now().Add(time.Minute)
	for {
		if cur, n := past(); cur != "" && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no batch counted with claims decided past it within a minute")
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if err := <-done; err == nil {
		t.Fatal("the first runner finished before it was stopped")
	}
	cur, ahead := past()
	mid, _ := first.Get(ctx, c.ID, "pipe")
	t.Logf("stopped at cursor %s with %d claims decided past it; progress %+v", cur, ahead, mid.Users)
	if ahead == 0 || mid.Users.Pending == 0 {
		t.Fatalf("after the stop %d claims past the cursor, %+v pending; want both above 0", ahead, mid.Users)
	}
	cfg.Owner = "second"
	second := newService(t, e, cfg)
	for {
		ran, err := second.RunOnce(ctx)
		if err != nil {
			t.Fatalf("resume: %v", err)
		}
		if g, _ := second.Get(ctx, c.ID, "pipe"); g.State == push.StateDone {
			break
		}
		if !ran {
			time.Sleep(100 * time.Millisecond) // the first runner's lease
		}
		if ctx.Err() != nil {
			t.Fatal("not done in time")
		}
	}
	fin, _ := second.Get(ctx, c.ID, "pipe")
	if fin.Users.Issued != users || len(fin.Users.Refused) != 0 || fin.Users.Pending != 0 {
		t.Fatalf("final %+v; want %d issued", fin.Users, users)
	}
	var rows, distinct int64
	end := time.Now().Add(4 * time.Minute)
	for {
		if err := e.PG.QueryRow(ctx, `SELECT count(*), count(DISTINCT user_id) FROM claims WHERE campaign_id = $1 AND channel = 'push:pipe'`,
			c.ID).Scan(&rows, &distinct); err != nil {
			t.Fatal(err)
		}
		if rows >= users || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := settler.Err(); rows != users || distinct != users {
		t.Fatalf("%d rows for %d users; want %d each (settler: %v)", rows, distinct, users, err)
	}
	got := counters(t, e, c.ID, "t1")
	want := map[string]string{"t1.taken": fmt.Sprint(users), "t1.stock": "100", "t1.held": "0", "meta.held": "0",
		"meta.spent": fmt.Sprint(users * 10), "users": fmt.Sprint(users)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q; want %q (all: %v)", k, got[k], v, got)
		}
	}
}
