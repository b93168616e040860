package recovery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk/riskstate"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/settle"
)

// Issue 17 across a Redis loss: a lottery's draws that won nothing are draws rows, not
// claims rows, yet each took one from per_user_limit and each request_id keeps its
// outcome. A user makes the campaign's limit of draws, every one no prize (the only
// prize has weight 0), the real settler writes them (draws rows), Redis loses
// everything, and recovery rebuilds: the campaign is a lottery again (kind and odds in
// its meta), the user's count is the limit - a new request_id is user_limit, not a
// fresh draw - and a retry of each old request_id is its draw again, no prize, with the
// same draw_id. Another user's won draw (a claims row) counts once, not twice.
func TestRecoverLotteryDraws(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 2*time.Minute)
	pr := startPrivateRedis(t)
	e := base.With(pr.client())
	const limit = 3
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 1000, PerUser: limit, SKUs: []testenv.SKU{
		{SKU: "phone", Stock: 5, Value: 100, Weight: 0}, {SKU: "sure", Stock: 5, Value: 10, Weight: 0}}})
	oddsBefore, err := e.RDB.HGet(ctx, rkeys.Meta(c.ID), "odds").Result()
	if err != nil {
		t.Fatal(err)
	}
	rulesOff := func() {
		t.Helper()
		if err := e.RDB.HSet(ctx, rkeys.RiskRules(c.ID), "device.max", 0, "ip.max", 0, "user.max", 0, "freeze.max", 0, "shadow", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rulesOff()

	draw := func(cl *claimer.Claimer, user, rq string) claimer.Outcome {
		t.Helper()
		r := &claimer.Request{RequestID: rq, CampaignID: c.ID, SKU: "x", UserID: user, DeviceID: "d-" + user, IP: "10.0.0.1"}
		if err := cl.Do(ctx, r); err != nil {
			t.Fatalf("draw %s: %v", rq, err)
		}
		return r.Outcome
	}
	cl := claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil)
	drawIDs := map[string]string{} // request_id -> draw_id
	for i := 0; i < limit; i++ {
		rq := fmt.Sprintf("rq-%d", i)
		o := draw(cl, "u-1", rq)
		if o.Code != claim.CodeNoPrize || !o.Lottery || o.ClaimID == "" {
			t.Fatalf("draw %d: %+v; want no_prize (every prize has weight 0)", i, o)
		}
		drawIDs[rq] = o.ClaimID
	}
	if o := draw(cl, "u-1", "rq-over"); o.Code != claim.CodeUserLimit {
		t.Fatalf("draw %d of a limit of %d before the loss: %+v; want user_limit", limit+1, limit, o)
	}
	// A won draw of another user (a claims row and a draws row): for this one draw the
	// meta's odds give the prize "sure" all the weight - on the private Redis alone, for
	// a claimer that reads its route afresh - and are put back after it.
	if err := e.RDB.HSet(ctx, rkeys.Meta(c.ID), "odds", "0123456789abcdef\t0\tphone\t0\tsure\t1").Err(); err != nil {
		t.Fatal(err)
	}
	o := draw(claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil), "u-2", "rq-won")
	if o.Code != claim.CodeAccepted || !o.Lottery {
		t.Fatalf("the won draw: %+v", o)
	}
	won := o.ClaimID
	if err := e.RDB.HSet(ctx, rkeys.Meta(c.ID), "odds", oddsBefore).Err(); err != nil {
		t.Fatal(err)
	}

	// Settle everything with the real settler (draws rows), from a topic of the test's own.
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != limit+1 {
		t.Fatalf("outbox: %d records, %v; want %d", len(recs), err, limit+1)
	}
	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-lottery")
	testenv.Produce(t, testenv.Producer(t), topic, recs)
	st, err := settle.New(settle.Config{Brokers: testenv.Brokers(), Topic: topic, Group: group,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}, e.RDB, e.PG, settle.NewMetrics(prometheus.NewRegistry()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(sctx) }()
	t.Cleanup(func() { stop(); <-done; st.Close() })
	testenv.Eventually(t, time.Minute, "every draw a draws row", func() bool {
		var n int
		e.PG.QueryRow(ctx, `SELECT count(*) FROM draws WHERE campaign_id = $1`, c.ID).Scan(&n)
		return n == limit+1
	})
	var noPrizeRows, claimRows int
	if err := e.PG.QueryRow(ctx, `SELECT (SELECT count(*) FROM draws WHERE campaign_id = $1 AND outcome = 'no_prize' AND user_id = 'u-1'),
		(SELECT count(*) FROM claims WHERE campaign_id = $1)`, c.ID).Scan(&noPrizeRows, &claimRows); err != nil {
		t.Fatal(err)
	}
	if noPrizeRows != limit || claimRows != 1 {
		t.Fatalf("books: %d no-prize draws of u-1, %d claims; want %d and 1", noPrizeRows, claimRows, limit)
	}

	if err := e.RDB.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rec := newRecoverer(t, e.RDB, e, c.BusinessLine, &recovery.KafkaCatchUp{Client: adminClient(t), Group: group, Topic: topic})
	out, err := rec.RecoverBusinessLine(ctx, c.BusinessLine)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Campaigns) != 1 || out.Campaigns[0].Rows != 1 || out.Campaigns[0].Taken != 1 || out.Campaigns[0].Records != limit+1 {
		t.Fatalf("outcome %+v; want 1 claim row taken and %d records restored", out, limit+1)
	}
	meta, err := e.RDB.HMGet(ctx, rkeys.Meta(c.ID), "kind", "odds", "taken").Result()
	if err != nil {
		t.Fatal(err)
	}
	if meta[0] != "lottery" || meta[1] != oddsBefore || meta[2] != "1" {
		t.Fatalf("rebuilt meta kind=%v odds=%q taken=%v; want lottery, %q, 1", meta[0], meta[1], meta[2], oddsBefore)
	}
	users, err := e.RDB.HGetAll(ctx, rkeys.Users(c.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users["u-1"] != fmt.Sprint(limit) || users["u-2"] != "1" {
		t.Fatalf("rebuilt per-user counts %v; want u-1=%d (its no-prize draws), u-2=1", users, limit)
	}
	runID, err := recovery.RunID(ctx, e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := riskstate.Ensure(ctx, e.PG, e.RDB, runID); err != nil {
		t.Fatal(err)
	}
	rulesOff()

	// A gateway that starts after the loss: its route is the rebuilt meta.
	after := claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil)
	for rq, id := range drawIDs {
		if o := draw(after, "u-1", rq); o.Code != claim.CodeNoPrize || !o.Replayed || o.ClaimID != id {
			t.Fatalf("retry of %s after the rebuild: %+v; want no_prize replayed as %s", rq, o, id)
		}
	}
	if o := draw(after, "u-1", "rq-new"); o.Code != claim.CodeUserLimit {
		t.Fatalf("a new draw of u-1 after the rebuild: %+v; want user_limit (%d draws made)", o, limit)
	}
	if o := draw(after, "u-2", "rq-won"); o.Code != claim.CodeAccepted || !o.Replayed || o.ClaimID != won {
		t.Fatalf("retry of the won draw: %+v; want its claim %s", o, won)
	}
	// u-2 has draws left: a new one is a draw (no prize: the books' weights are 0).
	if o := draw(after, "u-2", "rq-u2-new"); o.Code != claim.CodeNoPrize || o.Replayed {
		t.Fatalf("a new draw of u-2: %+v; want a fresh no_prize", o)
	}
}

// A lottery's outbox across a rebuild that finds it (Redis restarted and lost its last
// second of per-user counts): a no-prize draw whose draws row committed but whose outbox
// entry was not trimmed yet counts once (the row), not twice; one only in the outbox
// counts for its user while its record stands; neither is a claim, so the campaign's
// taken stays the claims'.
func TestRecoverLotteryDrawsInFlight(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, time.Minute)
	pr := startPrivateRedis(t)
	e := base.With(pr.client())
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 1000, PerUser: 3,
		SKUs: []testenv.SKU{{SKU: "phone", Stock: 5, Value: 100, Weight: 0}}})
	if err := e.RDB.HSet(ctx, rkeys.RiskRules(c.ID), "device.max", 0, "ip.max", 0, "user.max", 0, "freeze.max", 0, "shadow", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cl := claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil)
	ids := map[string]string{}
	for _, d := range []struct{ user, rq string }{{"u-1", "rq-1"}, {"u-1", "rq-2"}, {"u-3", "rq-3"}} {
		r := &claimer.Request{RequestID: d.rq, CampaignID: c.ID, SKU: "x", UserID: d.user, DeviceID: "d-" + d.user, IP: "10.0.0.1"}
		if err := cl.Do(ctx, r); err != nil || r.Code != claim.CodeNoPrize {
			t.Fatalf("draw %s: %+v, %v", d.rq, r.Outcome, err)
		}
		ids[d.rq] = r.ClaimID
	}
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != 3 {
		t.Fatalf("outbox %d, %v", len(recs), err)
	}
	// rq-1 is a draws row, as the settler writes it, whose outbox cleanup did not run.
	r := recs[0]
	d, ok := claim.ParseDraw(r.Draw)
	if r.ClaimID != ids["rq-1"] || !ok {
		t.Fatalf("first outbox entry %+v", r)
	}
	if _, err := e.PG.Exec(ctx, `INSERT INTO draws (draw_id, campaign_id, request_id, user_id, device_id, odds_version,
		random, pick, outcome, sku, value, drawn_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, 'no_prize', NULL, 0, $8)`,
		r.ClaimID, c.ID, r.RequestID, r.UserID, r.DeviceID, d.OddsVersion, d.R, r.ClaimedAt()); err != nil {
		t.Fatal(err)
	}
	// The lost last second: the per-user counts.
	if err := e.RDB.Del(ctx, rkeys.Users(c.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	g := testenv.NewGate()
	close(g.Open) // nothing of this test is in Kafka
	rec := newRecoverer(t, e.RDB, e, c.BusinessLine, g)
	out, err := rec.RecoverBusinessLine(ctx, c.BusinessLine)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Campaigns) != 1 || out.Campaigns[0].Rows != 0 || out.Campaigns[0].InFlight != 0 || out.Campaigns[0].Taken != 0 {
		t.Fatalf("outcome %+v; want no claim rows, none in flight, taken 0", out)
	}
	users, err := e.RDB.HGetAll(ctx, rkeys.Users(c.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users["u-1"] != "2" || users["u-3"] != "1" {
		t.Fatalf("rebuilt per-user counts %v; want u-1=2 (a row and one in flight), u-3=1", users)
	}
	if taken, _ := e.RDB.HGet(ctx, rkeys.Meta(c.ID), "taken").Result(); taken != "0" {
		t.Fatalf("rebuilt campaign taken %q; want 0 (no-prize draws are no claims)", taken)
	}
}
