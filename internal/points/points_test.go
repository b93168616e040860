package points_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type env struct {
	pg    *pgxpool.Pool
	rdb   *redis.Client
	svc   *points.Service
	clk   *clock
	reg   *prometheus.Registry
	shang *time.Location
}

func newEnv(t *testing.T, dailyCap int64) *env {
	t.Helper()
	z, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{pg: testenv.PG(t), rdb: testenv.Redis(t), clk: &clock{t: time.Now()}, reg: prometheus.NewRegistry(), shang: z}
	e.svc, err = points.New(e.pg, e.rdb, points.Config{DailyCap: dailyCap, Now: e.clk.now, Registerer: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) task(t *testing.T, perGrant, daily int64) (string, string) {
	t.Helper()
	id := testenv.ID(t, "task")
	res, err := e.svc.PutTask(context.Background(), id, &points.TaskPut{Name: "t", PerGrantMax: perGrant,
		PerUserDailyMax: daily, Lifetime: "720h"})
	if err != nil || res.Key == "" || !res.Created {
		t.Fatalf("put task: %+v %v", res, err)
	}
	return id, res.Key
}

// books is what the record and Redis say about a user.
func (e *env) books(t *testing.T, user string) (ledger, lots, ledgerRows int64, hot int64, hotOK bool) {
	t.Helper()
	ctx := context.Background()
	if err := e.pg.QueryRow(ctx, `SELECT coalesce(sum(delta),0), count(*) FROM points_ledger WHERE user_id = $1`, user).
		Scan(&ledger, &ledgerRows); err != nil {
		t.Fatal(err)
	}
	if err := e.pg.QueryRow(ctx, `SELECT coalesce(sum(remaining),0) FROM points_lots WHERE user_id = $1`, user).Scan(&lots); err != nil {
		t.Fatal(err)
	}
	hot, hotOK, err := e.svc.HotBalance(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	return
}

func refusal(err error) string {
	var r *points.Refusal
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

func TestGrantCeilingExactAndAbove(t *testing.T) {
	e := newEnv(t, 0)
	task, key := e.task(t, 99, 10_000)
	user := testenv.ID(t, "u")
	ctx := context.Background()
	if _, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: 99, GrantID: testenv.ID(t, "g")}); err != nil {
		t.Fatalf("grant at the ceiling: %v", err)
	}
	above := testenv.ID(t, "g")
	for i := 0; i < 2; i++ { // a retry is refused again and counted once
		_, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: 9999, GrantID: above})
		if refusal(err) != "grant_ceiling" {
			t.Fatalf("grant above the ceiling: %v, want grant_ceiling", err)
		}
	}
	ledger, lots, rows, hot, ok := e.books(t, user)
	if ledger != 99 || lots != 99 || rows != 1 || !ok || hot != 99 {
		t.Fatalf("books after ceiling: ledger %d lots %d rows %d hot %d/%v, want 99 99 1 99", ledger, lots, rows, hot, ok)
	}
	var n int
	if err := e.pg.QueryRow(ctx, `SELECT count(*) FROM points_refusals WHERE grant_id = $1 AND reason = 'grant_ceiling' AND amount = 9999`, above).Scan(&n); err != nil || n != 1 {
		t.Fatalf("refusal rows %d (%v), want 1", n, err)
	}
	if got := counterSum(t, e.reg, "flashgate_points_grants_refused_total"); got != 2 {
		t.Fatalf("refused metric %v, want 2 (one per refused request)", got)
	}
}

func TestGrantIdempotentByGrantID(t *testing.T) {
	e := newEnv(t, 0)
	task, key := e.task(t, 500, 10_000)
	user := testenv.ID(t, "u")
	ctx := context.Background()
	g := testenv.ID(t, "g")
	req := &points.GrantReq{UserID: user, Task: task, Amount: 120, GrantID: g}
	first, err := e.svc.Grant(ctx, []byte(key), req)
	if err != nil || first.Replayed {
		t.Fatalf("first grant: %+v %v", first, err)
	}
	e.clk.set(e.clk.now().Add(time.Hour))
	again, err := e.svc.Grant(ctx, []byte(key), req)
	if err != nil || !again.Replayed || !again.GrantedAt.Equal(first.GrantedAt) || !again.ExpiresAt.Equal(first.ExpiresAt) || again.Amount != 120 {
		t.Fatalf("repeat: %+v %v, want the first answer %+v replayed", again, err, first)
	}
	if _, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: 121, GrantID: g}); refusal(err) != "key_reuse" {
		t.Fatalf("another body under the same grant_id: %v, want key_reuse", err)
	}
	ledger, lots, rows, hot, ok := e.books(t, user)
	if ledger != 120 || lots != 120 || rows != 1 || !ok || hot != 120 {
		t.Fatalf("books: ledger %d lots %d rows %d hot %d/%v, want 120 120 1 120", ledger, lots, rows, hot, ok)
	}
	var evs int
	if err := e.pg.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'points_granted' AND key = $1`, user).Scan(&evs); err != nil || evs != 1 {
		t.Fatalf("points_granted events %d (%v), want 1", evs, err)
	}
}

// The daily caps count calendar days in Asia/Shanghai: 23:59 there and 00:01 the next
// day are two days even though both are the same UTC day (15:59 and 16:01 UTC).
func TestDailyCapAcrossMidnightInZone(t *testing.T) {
	e := newEnv(t, 250)
	taskA, keyA := e.task(t, 100, 150)
	taskB, keyB := e.task(t, 100, 1000)
	user := testenv.ID(t, "u")
	ctx := context.Background()
	e.clk.set(time.Date(2026, 12, 3, 23, 59, 0, 0, e.shang))
	grant := func(task, key string, amount int64) error {
		_, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: amount, GrantID: testenv.ID(t, "g")})
		return err
	}
	if err := grant(taskA, keyA, 100); err != nil {
		t.Fatal(err)
	}
	if err := grant(taskA, keyA, 50); err != nil { // exactly the task's daily max
		t.Fatal(err)
	}
	if err := grant(taskA, keyA, 1); refusal(err) != "daily_cap" {
		t.Fatalf("over the task's daily max: %v, want daily_cap", err)
	}
	if err := grant(taskB, keyB, 100); err != nil { // 250: exactly the overall cap
		t.Fatal(err)
	}
	if err := grant(taskB, keyB, 1); refusal(err) != "daily_cap" {
		t.Fatalf("over the overall daily cap: %v, want daily_cap", err)
	}
	e.clk.set(time.Date(2026, 12, 4, 0, 1, 0, 0, e.shang))
	if err := grant(taskA, keyA, 100); err != nil {
		t.Fatalf("after midnight in the zone: %v", err)
	}
	ledger, _, rows, hot, _ := e.books(t, user)
	if ledger != 350 || rows != 4 || hot != 350 {
		t.Fatalf("books: ledger %d rows %d hot %d, want 350 4 350", ledger, rows, hot)
	}
	if got := counterSum(t, e.reg, "flashgate_points_grants_refused_total"); got != 2 {
		t.Fatalf("refused metric %v, want 2", got)
	}
}

func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t, 0)
	task, key := e.task(t, 100, 1000)
	other, otherKey := e.task(t, 100, 1000)
	_ = other
	user := testenv.ID(t, "u")
	ctx := context.Background()
	cases := []struct {
		name  string
		key   string
		req   points.GrantReq
		field string
		err   error
	}{
		{"negative", key, points.GrantReq{UserID: user, Task: task, Amount: -5, GrantID: "g1"}, "amount", nil},
		{"zero", key, points.GrantReq{UserID: user, Task: task, Amount: 0, GrantID: "g2"}, "amount", nil},
		{"huge", key, points.GrantReq{UserID: user, Task: task, Amount: 1 << 62, GrantID: "g3"}, "amount", nil},
		{"bad user", key, points.GrantReq{UserID: "a b", Task: task, Amount: 5, GrantID: "g4"}, "user_id", nil},
		{"bad grant id", key, points.GrantReq{UserID: user, Task: task, Amount: 5, GrantID: ""}, "grant_id", nil},
		{"unknown task", key, points.GrantReq{UserID: user, Task: "nope-task", Amount: 5, GrantID: "g5"}, "", points.ErrForbidden},
		{"another source's key", otherKey, points.GrantReq{UserID: user, Task: task, Amount: 5, GrantID: "g6"}, "", points.ErrForbidden},
		{"no key", "", points.GrantReq{UserID: user, Task: task, Amount: 5, GrantID: "g7"}, "", points.ErrUnauthorized},
		{"wrong key", "fgt_nothing", points.GrantReq{UserID: user, Task: task, Amount: 5, GrantID: "g8"}, "", points.ErrUnauthorized},
	}
	for _, c := range cases {
		_, err := e.svc.Grant(ctx, []byte(c.key), &c.req)
		var fe *points.FieldError
		switch {
		case c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field):
			t.Errorf("%s: %v, want a field error naming %s", c.name, err, c.field)
		case c.err != nil && !errors.Is(err, c.err):
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
	ledger, lots, rows, _, ok := e.books(t, user)
	if ledger != 0 || lots != 0 || rows != 0 || ok {
		t.Fatalf("bad input changed the books: ledger %d lots %d rows %d hot built %v", ledger, lots, rows, ok)
	}
	for _, bad := range []points.TaskPut{
		{Name: "", PerGrantMax: 1, PerUserDailyMax: 1, Lifetime: "1h"},
		{Name: "x", PerGrantMax: 0, PerUserDailyMax: 1, Lifetime: "1h"},
		{Name: "x", PerGrantMax: 1, PerUserDailyMax: -1, Lifetime: "1h"},
		{Name: "x", PerGrantMax: 1, PerUserDailyMax: 1, Lifetime: "forever"},
	} {
		if _, err := e.svc.PutTask(ctx, task, &bad); !errors.As(err, new(*points.FieldError)) {
			t.Errorf("task %+v: %v, want a field error", bad, err)
		}
	}
	tk, err := e.svc.GetTask(ctx, task)
	if err != nil || tk.PerGrantMax != 100 || tk.PerUserDailyMax != 1000 {
		t.Fatalf("task changed by bad PUTs: %+v %v", tk, err)
	}
}

// A Redis failure after the grant's commit answers ErrApply; the same request again
// (Redis back) applies it exactly once.
func TestRedisFailureBetweenCommitAndApply(t *testing.T) {
	e := newEnv(t, 0)
	task, key := e.task(t, 100, 1000)
	user := testenv.ID(t, "u")
	ctx := context.Background()
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer dead.Close()
	broken, err := points.New(e.pg, dead, points.Config{})
	if err != nil {
		t.Fatal(err)
	}
	req := &points.GrantReq{UserID: user, Task: task, Amount: 40, GrantID: testenv.ID(t, "g")}
	if _, err := broken.Grant(ctx, []byte(key), req); !errors.Is(err, points.ErrApply) {
		t.Fatalf("grant with Redis down: %v, want ErrApply", err)
	}
	ledger, _, rows, _, ok := e.books(t, user)
	if ledger != 40 || rows != 1 || ok {
		t.Fatalf("after the failed apply: ledger %d rows %d hot built %v, want 40 1 false", ledger, rows, ok)
	}
	for i := 0; i < 3; i++ {
		if _, err := e.svc.Grant(ctx, []byte(key), req); err != nil {
			t.Fatalf("retry %d: %v", i, err)
		}
	}
	ledger, _, rows, hot, ok := e.books(t, user)
	if ledger != 40 || rows != 1 || !ok || hot != 40 {
		t.Fatalf("after retries: ledger %d rows %d hot %d/%v, want 40 1 40", ledger, rows, hot, ok)
	}
}

// A lost hot balance is rebuilt from the ledger; concurrent grants of one user never
// pass the daily cap and the hot balance ends equal to the ledger.
func TestConcurrentGrantsAndRebuild(t *testing.T) {
	e := newEnv(t, 0)
	task, key := e.task(t, 10, 505)
	user := testenv.ID(t, "u")
	ctx := context.Background()
	if _, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: 5, GrantID: testenv.ID(t, "g")}); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.Del(ctx, rkeys.Points(user)).Err(); err != nil { // Redis lost it
		t.Fatal(err)
	}
	var ok, capped atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 80; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: 10, GrantID: testenv.ID(t, "g")})
			switch {
			case err == nil:
				ok.Add(1)
			case refusal(err) == "daily_cap":
				capped.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 50 || capped.Load() != 30 {
		t.Fatalf("accepted %d capped %d, want 50 and 30", ok.Load(), capped.Load())
	}
	ledger, lots, _, hot, built := e.books(t, user)
	if ledger != 505 || lots != 505 || !built || hot != 505 {
		t.Fatalf("books: ledger %d lots %d hot %d/%v, want 505 everywhere", ledger, lots, hot, built)
	}
	acct, err := e.svc.Account(ctx, user)
	if err != nil || acct.Balance != 505 || acct.Frozen || len(acct.Expiring) != 51 {
		t.Fatalf("account: %+v %v", acct, err)
	}
}

// A hot balance not built on this Redis run (a restart restored it from the AOF, maybe
// without the last applies) is not trusted: the next grant rebuilds it from the ledger.
func TestHotBalanceFromAnotherRedisRunIsRebuilt(t *testing.T) {
	e := newEnv(t, 0)
	task, key := e.task(t, 100, 1000)
	user := testenv.ID(t, "u")
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: 30, GrantID: testenv.ID(t, "g")}); err != nil {
			t.Fatal(err)
		}
	}
	// What a restart that lost the second apply leaves: a stale balance, an old stamp.
	if err := e.rdb.HSet(ctx, rkeys.Points(user), "bal", 30, "ok", "0000previousrun").Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := e.svc.HotBalance(ctx, user); err != nil || ok {
		t.Fatalf("a balance of another run reads as built (%v, %v)", ok, err)
	}
	if _, err := e.svc.Grant(ctx, []byte(key), &points.GrantReq{UserID: user, Task: task, Amount: 5, GrantID: testenv.ID(t, "g")}); err != nil {
		t.Fatal(err)
	}
	ledger, _, _, hot, ok := e.books(t, user)
	if ledger != 65 || !ok || hot != 65 {
		t.Fatalf("ledger %d hot %d/%v, want 65 both", ledger, hot, ok)
	}
}
