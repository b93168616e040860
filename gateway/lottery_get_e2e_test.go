package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
	"github.com/flashgate/flashgate/settler/settle"
)

// GET /v1/claims/{draw_id} of a lottery draw that won nothing (issue 17; DESIGN.md
// "Lottery"): its owner gets 200 with the POST's no-prize fields, its state and drawn_at
// - pending while the draw is only in Redis (outbox and record), settled once the real
// settler has written its draws row - and anyone else gets exactly the 404 of an id that
// never existed. A draw made through POST /v1/claims reads back the same way.
func TestLotteryNoPrizeDrawReadable(t *testing.T) {
	g := startGateway(t)
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The only prize has weight 0: every draw wins nothing.
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 10, PerUser: 2,
		SKUs: []testenv.SKU{{SKU: "phone", Stock: 1, Value: 100, Weight: 0}}})
	if err := e.RDB.HSet(ctx, rkeys.RiskRules(c.ID), "device.max", 0, "ip.max", 0, "user.max", 0, "freeze.max", 0, "shadow", 0).Err(); err != nil {
		t.Fatal(err)
	}
	owner, other := testenv.ID(t, "u"), testenv.ID(t, "u")
	get := func(id, user string) answer {
		t.Helper()
		return send(t, "GET", g.pub+"/v1/claims/"+id+"?user_id="+user, "", nil)
	}
	unknown := get(testenv.NewClaimID(c.ID), owner)
	if unknown.status != 404 || string(unknown.body) != `{"error":"unknown_claim"}` {
		t.Fatalf("GET an unknown id: %s; want 404 unknown_claim", unknown)
	}
	notOwner := func(id string) {
		t.Helper()
		a := get(id, other)
		if a.status != unknown.status || string(a.body) != string(unknown.body) ||
			a.header.Get("Content-Type") != unknown.header.Get("Content-Type") {
			t.Fatalf("GET %s by another user: %s; want exactly the unknown id's %s", id, a, unknown)
		}
	}
	type drawBody struct {
		Result, DrawID, CampaignID, UserID, State, DrawnAt string
		ClaimID                                            *string
	}
	read := func(a answer) drawBody {
		t.Helper()
		var m map[string]*string
		if err := json.Unmarshal(a.body, &m); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		s := func(k string) string {
			if m[k] == nil {
				return ""
			}
			return *m[k]
		}
		return drawBody{Result: s("result"), DrawID: s("draw_id"), CampaignID: s("campaign_id"), UserID: s("user_id"),
			State: s("state"), DrawnAt: s("drawn_at"), ClaimID: m["claim_id"]}
	}
	check := func(id, state string, drawnAt time.Time) {
		t.Helper()
		a := get(id, owner)
		if a.status != 200 {
			t.Fatalf("GET the no-prize draw %s (%s) as its owner: %s; want 200", id, state, a)
		}
		b := read(a)
		at, err := time.Parse(time.RFC3339Nano, b.DrawnAt)
		if b.Result != "no_prize" || b.DrawID != id || b.CampaignID != c.ID || b.UserID != owner || b.State != state ||
			b.ClaimID != nil || err != nil || (!drawnAt.IsZero() && !at.Equal(drawnAt)) {
			t.Fatalf("GET the no-prize draw %s: %s; want no_prize, state %s, drawn_at %v", id, a.body, state, drawnAt)
		}
		notOwner(id)
	}

	// A draw in flight, exactly as a gateway leaves it once the broker acknowledged it
	// (claim.lua, then durable.lua), not yet read by any settler.
	ver, err := e.RDB.HGet(ctx, rkeys.Meta(c.ID), "odds").Result()
	if err != nil || len(ver) < 16 {
		t.Fatalf("odds field %q, %v", ver, err)
	}
	drawID, rq := testenv.NewClaimID(c.ID), testenv.ID(t, "rq")
	keys, args := claim.AppendHeader(nil, nil, 1, (24 * time.Hour).Milliseconds(), time.Hour.Milliseconds())
	k := rkeys.ClaimKeys(c.ID, "", rq, c.BusinessLine, "", "d-"+owner, "198.18.0.9", owner)
	keys, args = claim.AppendClaim(keys, args, &k, &claim.Args{RequestID: rq, ClaimID: drawID, CampaignID: c.ID,
		UserID: owner, DeviceID: "d-" + owner, IP: "198.18.0.9", Draw: string(claim.AppendDrawArg(nil, ver[:16], 0))})
	res, err := scripts.Claim.Run(ctx, e.RDB, keys, args...).Slice()
	if err != nil || !claim.ResultsFor(res, 1) {
		t.Fatalf("claim.lua: %v", err)
	}
	var o claim.Outcome
	claim.DecodeResult(res, 0, &o)
	if o.Code != claim.CodeNoPrize || o.ClaimID != drawID {
		t.Fatalf("scripted draw: %+v; want no_prize %s", o, drawID)
	}
	if err := scripts.Durable.Run(ctx, e.RDB, []string{rkeys.Request(c.ID, rq)}, drawID).Err(); err != nil {
		t.Fatal(err)
	}
	drawnAt := time.UnixMilli(o.ClaimedAtMs).UTC()
	check(drawID, "pending", drawnAt)

	// The real settler writes its draws row (from a topic of the test's own, so no other
	// settler reads it) and trims the outbox: the draw is then read from Postgres.
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != 1 || recs[0].ClaimID != drawID {
		t.Fatalf("outbox %v, %v; want the one draw", recs, err)
	}
	topic := testenv.NewTopic(t)
	testenv.Produce(t, testenv.Producer(t), topic, recs)
	st, err := settle.New(settle.Config{Brokers: testenv.Brokers(), Topic: topic, Group: testenv.ID(t, "settler-get"),
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}, e.RDB, e.PG, settle.NewMetrics(prometheus.NewRegistry()), testenv.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(sctx) }()
	defer func() { stop(); <-done; st.Close() }()
	testenv.Eventually(t, time.Minute, "the draw a draws row and out of the outbox", func() bool {
		var n int
		e.PG.QueryRow(ctx, `SELECT count(*) FROM draws WHERE draw_id = $1 AND outcome = 'no_prize'`, drawID).Scan(&n)
		ob, _ := e.RDB.XLen(ctx, rkeys.Outbox(c.ID)).Result()
		return n == 1 && ob == 0
	})
	check(drawID, "settled", drawnAt)

	// Through the API: the POST's draw_id reads back (pending or settled, whichever
	// settler got to it first), with the POST's fields.
	cl := newClaimant(t, g)
	first := cl.claimUntilAnswered(c.ID, "anything", owner, "d-"+owner, testenv.ID(t, "rq"))
	if first.status != 200 || read(first).Result != "no_prize" {
		t.Fatalf("POST a draw: %s; want 200 no_prize", first)
	}
	posted := read(first)
	a := get(posted.DrawID, owner)
	b := read(a)
	if a.status != 200 || b.Result != "no_prize" || b.DrawID != posted.DrawID || b.CampaignID != posted.CampaignID ||
		b.UserID != posted.UserID || (b.State != "pending" && b.State != "settled") {
		t.Fatalf("GET the POSTed draw: %s; POST answered %s", a, first.body)
	}
	notOwner(posted.DrawID)
}
