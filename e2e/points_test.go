package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// The points mall's claim path end to end (issue 16; DESIGN.md "Points: the cross-slot
// step"): a gateway and a settler (binaries) on a private Redis and broker, the
// points_item campaign and the grants through the HTTP APIs, the books read from
// Postgres and Redis.

// pointsSettler: the settler's points sweep, fast for tests.
var pointsSettler = []string{"FLASH_POINTS_HOLDS_INTERVAL=200ms", "FLASH_POINTS_HOLDS_GRACE=2s"}

// pointsTask registers a task and returns its id and source key.
func (s *system) pointsTask(perGrant, perDay int64) (string, string) {
	s.t.Helper()
	id := testenv.ID(s.t, "task")
	code, b := s.adminDo("PUT", "/admin/v1/points/tasks/"+id, map[string]any{"name": "e2e", "per_grant_max": perGrant,
		"per_user_daily_max": perDay, "lifetime": "720h"})
	if code != 200 {
		s.t.Fatalf("PUT task: %d %s", code, b)
	}
	var out struct{ Key string }
	if err := json.Unmarshal(b, &out); err != nil || out.Key == "" {
		s.t.Fatalf("PUT task: no key in %s", b)
	}
	return id, out.Key
}

// grantAll grants amount to every user (concurrently), failing on any non-200.
func (s *system) grantAll(task, key string, users []string, amount int64) {
	s.t.Helper()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			b, _ := json.Marshal(map[string]any{"user_id": u, "task": task, "amount": amount, "grant_id": "g-" + u})
			req, _ := http.NewRequest("POST", s.public+"/v1/points/grants", bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Source-Key", key)
			resp, err := s.http.Do(req)
			if err != nil {
				s.t.Errorf("grant %s: %v", u, err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				s.t.Errorf("grant %s: %d %s", u, resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	if s.t.Failed() {
		s.t.FailNow()
	}
}

// pointsCampaign creates an open points_item campaign with one SKU "item" of stock at
// price points.
func (s *system) pointsCampaign(bl string, stock, price, perUser int64) string {
	s.t.Helper()
	id := testenv.ID(s.t, "pts")
	body := map[string]any{"name": "points " + s.t.Name(), "business_line": bl, "kind": "points_item",
		"starts_at": time.Now().Add(-time.Minute), "ends_at": time.Now().Add(time.Hour), "per_user_limit": perUser,
		"budget": 1_000_000_000, "voucher_ttl": "72h",
		"skus": []map[string]any{{"sku": "item", "stock": stock, "value": 1, "points": price}}}
	if code, b := s.adminDo("PUT", "/admin/v1/campaigns/"+id, body); code != 200 {
		s.t.Fatalf("PUT points campaign: %d %s", code, b)
	}
	return id
}

// pointsBooks is one user's points as the record and the hot balance say.
type pointsBooks struct {
	ledger, lots, spends int64
	bal, held            int64
	built                bool
}

func (s *system) pointsBooks(user string) pointsBooks {
	s.t.Helper()
	var b pointsBooks
	ctx := context.Background()
	if err := s.pg.QueryRow(ctx, `SELECT coalesce((SELECT sum(delta) FROM points_ledger WHERE user_id = $1), 0),
		coalesce((SELECT sum(remaining) FROM points_lots WHERE user_id = $1), 0),
		(SELECT count(*) FROM points_ledger WHERE user_id = $1 AND kind = 'spend')`, user).Scan(&b.ledger, &b.lots, &b.spends); err != nil {
		s.t.Fatal(err)
	}
	h, err := s.rdb.HMGet(ctx, rkeys.Points(user), "bal", "held", "ok").Result()
	if err != nil {
		s.t.Fatal(err)
	}
	num := func(v any) int64 { x, _ := v.(string); n, _ := strconv.ParseInt(x, 10, 64); return n }
	b.bal, b.held, b.built = num(h[0]), num(h[1]), h[2] != nil
	return b
}

// holdsLeft is the number of entries in a campaign's holds index.
func (s *system) holdsLeft(campaign string) int64 {
	n, err := s.rdb.HLen(context.Background(), rkeys.PointsHolds(campaign)).Result()
	if err != nil && err != redis.Nil {
		s.t.Fatal(err)
	}
	return n
}

// checkPointsBooks: once the campaign settled and its holds resolved, every user's
// ledger sum equals its hot balance and its lots, nothing is held, no balance is
// negative, and each user's spends are its rows: the points spent are rows x price.
func checkPointsBooks(t *testing.T, s *system, campaign string, users []string, price int64) (spent int64) {
	t.Helper()
	s.settled(campaign, 90*time.Second)
	testenv.Eventually(t, 60*time.Second, "the campaign's points holds are all resolved", func() bool { return s.holdsLeft(campaign) == 0 })
	rowsOf := map[string]int64{}
	rows, err := s.pg.Query(context.Background(), `SELECT user_id, count(*) FROM claims WHERE campaign_id = $1 GROUP BY user_id`, campaign)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var u string
		var n int64
		if err := rows.Scan(&u, &n); err != nil {
			t.Fatal(err)
		}
		rowsOf[u] = n
	}
	rows.Close()
	var totalRows int64
	for _, u := range users {
		b := s.pointsBooks(u)
		if b.ledger < 0 || b.bal < 0 || b.held != 0 || b.ledger != b.lots || b.built && b.bal != b.ledger {
			t.Errorf("user %s: ledger %d lots %d hot bal %d held %d: want ledger = lots = hot balance >= 0, nothing held", u, b.ledger, b.lots, b.bal, b.held)
		}
		if b.spends != rowsOf[u] {
			t.Errorf("user %s: %d spend rows for %d claim rows", u, b.spends, rowsOf[u])
		}
		totalRows += rowsOf[u]
	}
	if err := s.pg.QueryRow(context.Background(), `SELECT coalesce(-sum(delta), 0) FROM points_ledger WHERE kind = 'spend'
		AND source_id LIKE $1`, campaign+":%").Scan(&spent); err != nil {
		t.Fatal(err)
	}
	if spent != totalRows*price {
		t.Errorf("points spent %d, want rows %d x price %d = %d", spent, totalRows, price, totalRows*price)
	}
	return spent
}

func pointsUsers(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// TestPointsRush: 2,000 users each holding points for exactly one item race for 100
// items. Exactly 100 win, 1,900 are refused sold_out with their points intact; after
// settlement the ledger of each user is its hot balance, nobody is negative, and the
// points spent are items x price in Postgres.
func TestPointsRush(t *testing.T) {
	f := startFaults(t, faultOpts{settlerExtra: pointsSettler})
	const n, stock, price = 2000, 100, 500
	task, key := f.pointsTask(1000, 1000)
	us := pointsUsers(testenv.ID(t, "pu"), n)
	f.grantAll(task, key, us, price)
	cmp := f.pointsCampaign(f.bl, stock, price, 1)

	wait, _ := f.sale(cmp, "item", us, 64)
	answers := wait()
	won, reasons := 0, map[string]int{}
	for i, a := range answers {
		switch {
		case a.Status == 200:
			won++
		case a.Status == 409 && a.Reason == "sold_out":
			reasons[a.Reason]++
			if b := f.pointsBooks(us[i]); b.bal-b.held != price {
				t.Errorf("refused user %s: spendable %d (bal %d held %d), want its %d points intact", us[i], b.bal-b.held, b.bal, b.held, price)
			}
		default:
			t.Errorf("user %s: %d %+v, want 200 or 409 sold_out", us[i], a.Status, a)
		}
	}
	if won != stock || reasons["sold_out"] != n-stock {
		t.Fatalf("won %d, sold_out %d; want %d and %d", won, reasons["sold_out"], stock, n-stock)
	}
	if spent := checkPointsBooks(t, f.system, cmp, us, price); spent != stock*price {
		t.Fatalf("spent %d, want %d", spent, stock*price)
	}
	f.benchVerifyPoints(cmp)
}

// benchVerifyPoints runs `bench verify` on a points_item campaign and fails unless
// every check held, the points checks among them.
func (s *system) benchVerifyPoints(campaign string) {
	s.t.Helper()
	bin := testenv.Build(s.t, "./bench")
	p := testenv.Start(s.t, bin, []string{"FLASH_REDIS_ADDR=" + s.rdb.Options().Addr, "FLASH_PG_URL=" + testenv.PGURL()},
		"verify", "--campaign", campaign, "--wait", "30s", "--json")
	err := p.Wait(s.t, 2*time.Minute)
	var rep struct {
		Held   bool `json:"held"`
		Checks []struct {
			Name   string `json:"name"`
			Pass   bool   `json:"pass"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	out := p.Output()
	if i := bytes.IndexByte([]byte(out), '{'); i >= 0 {
		out = out[i:]
	}
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
		s.t.Fatalf("bench verify: %v (exit %v): %s", jerr, err, p.Output())
	}
	names := map[string]bool{}
	for _, c := range rep.Checks {
		names[c.Name] = true
		if !c.Pass {
			s.t.Errorf("bench verify: %s failed: %s", c.Name, c.Detail)
		}
	}
	for _, n := range []string{"points holds resolved", "points: ledger = lots = hot balance", "points: no negative balance",
		"points spent = items x price", "no grant above its ceiling"} {
		if !names[n] {
			s.t.Errorf("bench verify did not check %q", n)
		}
	}
	if !rep.Held || err != nil {
		s.t.Fatalf("bench verify: held %v, exit %v", rep.Held, err)
	}
}

// TestPointsTwoClaimsAtOnce: one user with points for one item sends two claims at once
// (two request ids, per-user limit 5): one wins, the other is 409 insufficient_points.
// The same request id sent twice at once is one claim (both answers name it).
func TestPointsTwoClaimsAtOnce(t *testing.T) {
	f := startFaults(t, faultOpts{settlerExtra: pointsSettler})
	const price = 300
	task, key := f.pointsTask(1000, 1000)
	u := testenv.ID(t, "solo")
	twin := testenv.ID(t, "twin")
	f.grantAll(task, key, []string{u, twin}, price)
	cmp := f.pointsCampaign(f.bl, 10, price, 5)
	claimBoth := func(a, b claimReq) [2]claimResp {
		var out [2]claimResp
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, r := range []claimReq{a, b} {
			wg.Go(func() { <-start; out[i] = f.claimUntilAnswered(r, 30*time.Second) })
		}
		close(start)
		wg.Wait()
		return out
	}
	out := claimBoth(claimReq{cmp, "item", u, "d1", "r1"}, claimReq{cmp, "item", u, "d1", "r2"})
	ok, short := 0, 0
	for _, a := range out {
		switch {
		case a.Status == 200:
			ok++
		case a.Status == 409 && a.Reason == "insufficient_points":
			short++
		default:
			t.Errorf("answer %d %+v", a.Status, a)
		}
	}
	if ok != 1 || short != 1 {
		t.Fatalf("two claims with points for one: %+v, want one 200 and one 409 insufficient_points", out)
	}
	dup := claimBoth(claimReq{cmp, "item", twin, "d2", "same"}, claimReq{cmp, "item", twin, "d2", "same"})
	if dup[0].Status != 200 || dup[1].Status != 200 || dup[0].ClaimID != dup[1].ClaimID {
		t.Fatalf("one request sent twice at once: %+v, want both 200 with one claim id", dup)
	}
	checkPointsBooks(t, f.system, cmp, []string{u, twin}, price)
	for _, who := range []string{u, twin} {
		if b := f.pointsBooks(who); b.ledger != 0 || b.spends != 1 {
			t.Errorf("%s: ledger %d spends %d, want 0 and 1", who, b.ledger, b.spends)
		}
	}
}

// TestPointsFreezeDuringRush: half the users are frozen through the admin API while a
// rush is under way (riskctl's freeze writes the same record and flag: riskctl tests). A frozen user's claim after its freeze is 403 blocked and keeps its
// points; what was accepted before is spent once; the books balance.
func TestPointsFreezeDuringRush(t *testing.T) {
	f := startFaults(t, faultOpts{settlerExtra: pointsSettler})
	const n, stock, price = 200, 60, 100
	task, key := f.pointsTask(1000, 1000)
	us := pointsUsers(testenv.ID(t, "fz"), n)
	f.grantAll(task, key, us, price)
	cmp := f.pointsCampaign(f.bl, stock, price, 1)
	// The second half of the users is frozen (8 at a time) once the rush is under way;
	// the sale claims in order, so most of them claim after their freeze.
	wait, answered := f.sale(cmp, "item", us, 4)
	testenv.Eventually(t, 30*time.Second, "the rush is under way", func() bool { return answered.Load() > 20 })
	var froze atomic.Int64
	var fw sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := n / 2; i < n; i++ {
		sem <- struct{}{}
		fw.Go(func() {
			defer func() { <-sem }()
			if code, b := f.adminDo("POST", "/admin/v1/points/accounts/"+us[i]+"/freeze", map[string]string{"reason": "rush test"}); code != 200 {
				t.Errorf("freeze %s: %d %s", us[i], code, b)
			}
			froze.Add(1)
		})
	}
	fw.Wait()
	answers := wait()
	blocked := 0
	for i, a := range answers {
		switch {
		case a.Status == 403 && a.Reason == "blocked":
			blocked++
			if i < n/2 {
				t.Errorf("user %s was never frozen but was answered blocked", us[i])
			}
			if b := f.pointsBooks(us[i]); b.bal-b.held != price || b.ledger != price {
				t.Errorf("blocked user %s: spendable %d ledger %d, want %d intact", us[i], b.bal-b.held, b.ledger, price)
			}
		case a.Status == 200, a.Status == 409 && a.Reason == "sold_out":
		default:
			t.Errorf("user %s: %d %+v", us[i], a.Status, a)
		}
	}
	if blocked == 0 {
		t.Fatalf("no claim was blocked: the freeze (%d users) did not land during the rush", froze.Load())
	}
	t.Logf("rush with a freeze: %d blocked of %d frozen", blocked, froze.Load())
	// After the rush every frozen user's claim is blocked.
	if a := f.claim(claimReq{cmp, "item", us[n-1], "dx", "after-freeze"}); a.Status != 403 || a.Reason != "blocked" {
		t.Errorf("a frozen user's claim after the rush: %d %+v, want 403 blocked", a.Status, a)
	}
	checkPointsBooks(t, f.system, cmp, us, price)
}

// TestPointsVoidGivesBackOnce: the broker refuses the produce, the gateway voids the
// claim (503) and gives the hold back at once - exactly once, however often the client
// retries while the broker still refuses. Once it accepts again the retry is decided
// anew with a fresh hold, settled and spent once.
func TestPointsVoidGivesBackOnce(t *testing.T) {
	k := testenv.NewKfake(t)
	f := startFaults(t, faultOpts{brokers: k.Brokers()[0], settlerExtra: pointsSettler})
	const price = 200
	task, key := f.pointsTask(1000, 1000)
	u := testenv.ID(t, "void")
	f.grantAll(task, key, []string{u}, price)
	cmp := f.pointsCampaign(f.bl, 5, price, 1)
	fault := k.FailProduce(kerr.InvalidRecord.Code) // refused for good: the produce fails at once
	req := claimReq{cmp, "item", u, "dv", "rv"}
	for i := 0; i < 3; i++ {
		if a := f.claim(req); a.Status != 503 {
			t.Fatalf("attempt %d with the broker refusing: %d %+v, want 503", i, a.Status, a)
		}
		b := f.pointsBooks(u)
		if b.held != 0 || b.bal != price || b.ledger != price {
			t.Fatalf("after voided attempt %d: bal %d held %d ledger %d, want the %d points back, nothing held", i, b.bal, b.held, b.ledger, price)
		}
	}
	if fault.Hits() == 0 {
		t.Fatal("the broker never refused a produce")
	}
	if s := f.hgetInt(rkeys.SKU(cmp, "item"), "taken"); s != 0 {
		t.Fatalf("taken %d after voids, want 0", s)
	}
	fault.Clear()
	a := f.claimUntilAnswered(req, 30*time.Second)
	if a.Status != 200 {
		t.Fatalf("retry with the broker back: %d %+v", a.Status, a)
	}
	checkPointsBooks(t, f.system, cmp, []string{u}, price)
	if b := f.pointsBooks(u); b.ledger != 0 || b.spends != 1 {
		t.Fatalf("after the accepted retry: ledger %d spends %d, want 0 and 1", b.ledger, b.spends)
	}
}

// TestPointsCrashBetweenReserveAndClaim: a gateway that died after holding a user's
// points and before claim.lua ran leaves a hold and its index entry and nothing else;
// the settler's sweep gives it back once its grace has passed. A gateway that died after
// the script accepted (before the produce) leaves a hold and a claim only in the outbox:
// the relay voids it (it was never durable) and the sweep then gives the hold back. (A
// hold whose claim is a row but whose spend was lost - the settler died between the two
// - is spent by the sweep: internal/points TestSweepResolvesHolds.)
func TestPointsCrashBetweenReserveAndClaim(t *testing.T) {
	f := startFaults(t, faultOpts{settlerExtra: append([]string{"FLASH_RELAY_MIN_AGE=2s", "FLASH_RELAY_INTERVAL=200ms"}, pointsSettler...),
		gatewayExtra: []string{"FLASH_FAULT_EXIT_AFTER_SCRIPT=1"}})
	const price = 250
	task, key := f.pointsTask(1000, 1000)
	orphan, crashed := testenv.ID(t, "orph"), testenv.ID(t, "crash")
	f.grantAll(task, key, []string{orphan, crashed}, price)
	cmp := f.pointsCampaign(f.bl, 5, price, 1)

	// What the gateway leaves when it dies between steps 2 and 3: the index entry, then
	// the hold (the same calls its points step makes).
	svc, err := points.New(f.pg, f.rdb, points.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	field := rkeys.PointsHoldField("r-orphan", orphan)
	if err := f.rdb.HSet(ctx, rkeys.PointsHolds(cmp), field, strconv.FormatInt(time.Now().UnixMilli(), 10)+":tok").Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := svc.Reserve(ctx, orphan, rkeys.PointsReservation(cmp, "r-orphan"), "tok", price); err != nil || got != points.Reserved {
		t.Fatalf("reserve: %s %v", got, err)
	}
	if b := f.pointsBooks(orphan); b.held != price {
		t.Fatalf("held %d, want %d", b.held, price)
	}

	// The hooked gateway accepts one claim and dies before producing it.
	if a := f.claim(claimReq{cmp, "item", crashed, "dc", "r-crash"}); a.Status != -1 {
		t.Fatalf("the hooked gateway answered %d %+v; want no answer (it exits)", a.Status, a)
	}
	testenv.Eventually(t, 10*time.Second, "the hooked gateway exits", f.gw.Exited)
	if b := f.pointsBooks(crashed); b.held != price {
		t.Fatalf("the crashed claim's hold: %d, want %d", b.held, price)
	}

	testenv.Eventually(t, 30*time.Second, "the orphaned hold is given back", func() bool {
		b := f.pointsBooks(orphan)
		return b.held == 0 && b.bal == price
	})
	testenv.Eventually(t, 60*time.Second, "the crashed claim's hold is resolved", func() bool { return f.pointsBooks(crashed).held == 0 })
	checkPointsBooks(t, f.system, cmp, []string{orphan, crashed}, price)
	for _, u := range []string{orphan, crashed} {
		if b := f.pointsBooks(u); b.ledger != price || b.spends != 0 || b.bal != price {
			t.Fatalf("%s: ledger %d spends %d hot %d, want %d untouched", u, b.ledger, b.spends, b.bal, price)
		}
	}
	if n := f.rows(cmp); n != 0 {
		t.Fatalf("%d rows for a claim never made durable", n)
	}
}

// TestPointsExpiryAndReminders: lots about to expire are listed for admins (GET
// /admin/v1/points/expiring, bad input 400 naming the field) and shown to their owner
// (GET /v1/me/points); once due, the settler expires them oldest first with a
// points_expired event published to flash.events, and the books balance.
func TestPointsExpiryAndReminders(t *testing.T) {
	f := startFaults(t, faultOpts{settlerExtra: append([]string{"FLASH_POINTS_EXPIRE_INTERVAL=200ms"}, pointsSettler...)})
	id := testenv.ID(t, "short")
	code, b := f.adminDo("PUT", "/admin/v1/points/tasks/"+id, map[string]any{"name": "short", "per_grant_max": 1000,
		"per_user_daily_max": 1000, "lifetime": "4s"})
	if code != 200 {
		t.Fatalf("PUT task: %d %s", code, b)
	}
	var tk struct{ Key string }
	_ = json.Unmarshal(b, &tk)
	u := testenv.ID(t, "exp")
	f.grantAll(id, tk.Key, []string{u}, 70)

	for _, q := range []struct{ query, field string }{{"", "within"}, {"within=soon", "within"}, {"within=1000h", "within"},
		{"within=1h&limit=0", "limit"}, {"within=1h&after=nope", "after"}} {
		code, b := f.adminDo("GET", "/admin/v1/points/expiring?"+q.query, nil)
		if code != 400 || !bytes.Contains(b, []byte(q.field)) {
			t.Errorf("expiring?%s: %d %s, want 400 naming %s", q.query, code, b, q.field)
		}
	}
	code, b = f.adminDo("GET", "/admin/v1/points/expiring?within=1h&limit=1000", nil)
	var page points.ExpiringPage
	if err := json.Unmarshal(b, &page); code != 200 || err != nil {
		t.Fatalf("expiring: %d %s", code, b)
	}
	found := false
	for _, l := range page.Lots {
		found = found || l.UserID == u && l.Remaining == 70
	}
	if !found {
		t.Fatalf("the user's lot is not in the expiring list: %s", b)
	}
	resp, err := f.http.Get(f.public + "/v1/me/points?user_id=" + u)
	if err != nil {
		t.Fatal(err)
	}
	var acct points.Account
	err = json.NewDecoder(resp.Body).Decode(&acct)
	resp.Body.Close()
	if err != nil || acct.Balance != 70 || len(acct.Expiring) != 1 || acct.Expiring[0].ExpiresAt.IsZero() {
		t.Fatalf("GET /v1/me/points: %+v %v, want 70 expiring at a time", acct, err)
	}

	testenv.Eventually(t, 30*time.Second, "the settler expires the lot", func() bool { return f.pointsBooks(u).ledger == 0 })
	bk := f.pointsBooks(u)
	if bk.lots != 0 || bk.bal != 0 || bk.held != 0 {
		t.Fatalf("after expiry: %+v, want all 0", bk)
	}
	testenv.Eventually(t, 30*time.Second, "the points_expired event is published to flash.events", func() bool {
		var n int
		_ = f.pg.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'points_expired' AND key = $1
			AND (body ->> 'points')::bigint = 70 AND published_at IS NOT NULL`, u).Scan(&n)
		return n == 1
	})
}

// TestPointsChaosShort: the chaos short form during a points rush - kill -9 of the
// gateway, then of the settler, each restarted, while 600 users with points for one
// item each race for 200 (clients retry the same request_id on 503 or a dropped
// connection). Afterwards: at most the stock accepted, every 200 a row, every hold
// resolved, per user ledger = lots = hot balance, nobody negative, points spent = rows x
// price, and bench verify holds.
func TestPointsChaosShort(t *testing.T) {
	f := startFaults(t, faultOpts{settlerExtra: append([]string{"FLASH_RELAY_MIN_AGE=2s", "FLASH_RELAY_INTERVAL=200ms"}, pointsSettler...)})
	const n, stock, price = 600, 200, 100
	task, key := f.pointsTask(1000, 1000)
	us := pointsUsers(testenv.ID(t, "ch"), n)
	f.grantAll(task, key, us, price)
	cmp := f.pointsCampaign(f.bl, stock, price, 1)

	answers := make([]claimResp, n)
	var answered atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	deadline := time.Now().Add(2 * time.Minute)
	for i, u := range us {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			req := claimReq{CampaignID: cmp, SKU: "item", UserID: u, DeviceID: "d-" + u, RequestID: "r-" + u}
			for {
				a := f.claim(req)
				if (a.Status != 503 && a.Status != -1) || time.Now().After(deadline) {
					answers[i] = a
					answered.Add(1)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	testenv.Eventually(t, 60*time.Second, "the rush is under way", func() bool { return answered.Load() > 60 })
	f.gw.Kill()
	f.startGateway()
	testenv.Eventually(t, 60*time.Second, "the rush goes on after the gateway's restart", func() bool { return answered.Load() > 200 })
	f.st.Kill()
	f.startSettler()
	wg.Wait()

	accepted, reasons, ids := count(answers)
	t.Logf("points chaos: %d accepted, others %v", accepted, reasons)
	for i, a := range answers {
		if a.Status != 200 && !(a.Status == 409 && a.Reason == "sold_out") {
			t.Errorf("user %s: %d %+v, want 200 or 409 sold_out", us[i], a.Status, a)
		}
	}
	if accepted > stock || len(ids) != accepted || accepted == 0 {
		t.Fatalf("accepted %d (distinct %d), stock %d", accepted, len(ids), stock)
	}
	checkPointsBooks(t, f.system, cmp, us, price)
	rows := claimIDsInPG(t, f.pg, cmp)
	for id := range ids {
		if !rows[id] {
			t.Errorf("claim %s was answered 200 but is not a row", id)
		}
	}
	f.benchVerifyPoints(cmp)
}

// TestPointsRevokeAfterConfirmationGivesBackOnce: a points_item claim settled and spent
// is revoked with riskctl revoke (a void after confirmation): the settler gives its
// points back exactly once - a give_back ledger row, the lot restored, the hot balance
// up by the price - and its passes after that change nothing. A retry of the revoked
// request replays its answer and takes no points; the user can spend the points given
// back on a new claim; a Redis rebuild of the balance keeps the give-back once.
func TestPointsRevokeAfterConfirmationGivesBackOnce(t *testing.T) {
	f := startFaults(t, faultOpts{settlerExtra: pointsSettler})
	const price = 150
	task, key := f.pointsTask(1000, 1000)
	u := testenv.ID(t, "rev")
	f.grantAll(task, key, []string{u}, price)
	cmp := f.pointsCampaign(f.bl, 5, price, 2)
	req := claimReq{cmp, "item", u, "drev", "r-rev"}
	if a := f.claimUntilAnswered(req, 30*time.Second); a.Status != 200 {
		t.Fatalf("claim: %d %+v", a.Status, a)
	}
	checkPointsBooks(t, f.system, cmp, []string{u}, price)
	if b := f.pointsBooks(u); b.ledger != 0 || b.spends != 1 || b.bal != 0 {
		t.Fatalf("after the spend: ledger %d spends %d hot %d, want 0 1 0", b.ledger, b.spends, b.bal)
	}

	rc := testenv.Build(t, "./riskctl")
	cmd := exec.Command(rc, "revoke", "user", u, "--reason", "e2e: void after confirmation", "--actor", "e2e")
	cmd.Env = append(cmd.Environ(), "FLASH_PG_URL="+testenv.PGURL(), "FLASH_REDIS_ADDR="+f.redis.addr())
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "1 unredeemed") {
		t.Fatalf("riskctl revoke: %v\n%s", err, out)
	}
	ctx := context.Background()
	backRows := func() (n, sum int64) {
		if err := f.pg.QueryRow(ctx, `SELECT count(*), coalesce(sum(delta), 0) FROM points_ledger WHERE user_id = $1 AND kind = 'give_back'`, u).
			Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		return
	}
	testenv.Eventually(t, 30*time.Second, "the revoked claim's points are given back", func() bool {
		b := f.pointsBooks(u)
		return b.ledger == price && b.bal == price
	})
	var hotDone bool
	if err := f.pg.QueryRow(ctx, `SELECT hot_done FROM points_give_backs WHERE source_id = $1`, rkeys.PointsReservation(cmp, "r-rev")).Scan(&hotDone); err != nil || !hotDone {
		t.Fatalf("give-back row: hot_done %v (%v), want true", hotDone, err)
	}
	var events int
	if err := f.pg.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'points_given_back' AND key = $1`, u).Scan(&events); err != nil || events != 1 {
		t.Fatalf("points_given_back events: %d (%v), want 1", events, err)
	}
	// Several more holds passes (200 ms each) give nothing twice.
	time.Sleep(1500 * time.Millisecond)
	if n, sum := backRows(); n != 1 || sum != price {
		t.Fatalf("give_back rows %d worth %d, want 1 worth %d", n, sum, price)
	}
	if b := f.pointsBooks(u); b.ledger != price || b.lots != price || b.bal != price || b.held != 0 {
		t.Fatalf("after the give-back: ledger %d lots %d hot %d held %d, want %d %d %d 0", b.ledger, b.lots, b.bal, b.held, price, price, price)
	}
	// The revoked request's retry replays its answer and holds nothing.
	if a := f.claimUntilAnswered(req, 30*time.Second); a.Status != 200 {
		t.Fatalf("retry of the revoked request: %d %+v, want its replayed 200", a.Status, a)
	}
	if b := f.pointsBooks(u); b.bal != price || b.held != 0 {
		t.Fatalf("after the retry: hot %d held %d, want %d and nothing held", b.bal, b.held, price)
	}
	// A Redis that lost the hot balance rebuilds it with the give-back counted once.
	if err := f.rdb.HSet(ctx, rkeys.Points(u), "ok", "0000previousrun", "bal", 999).Err(); err != nil {
		t.Fatal(err)
	}
	svc, err := points.New(f.pg, f.rdb, points.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Rebuild(ctx, u); err != nil {
		t.Fatal(err)
	}
	if b := f.pointsBooks(u); b.bal != price {
		t.Fatalf("rebuilt hot balance %d, want %d", b.bal, price)
	}
	time.Sleep(500 * time.Millisecond)
	if b := f.pointsBooks(u); b.bal != price {
		t.Fatalf("hot balance %d after passes over the rebuilt balance, want %d", b.bal, price)
	}
	// The points given back buy a new item.
	if a := f.claimUntilAnswered(claimReq{cmp, "item", u, "drev", "r-rev-2"}, 30*time.Second); a.Status != 200 {
		t.Fatalf("a new claim with the points given back: %d %+v", a.Status, a)
	}
	testenv.Eventually(t, 60*time.Second, "the new claim's points are spent", func() bool {
		b := f.pointsBooks(u)
		return b.spends == 2 && b.ledger == 0 && b.bal == 0 && b.held == 0
	})
}
