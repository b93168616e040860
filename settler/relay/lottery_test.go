package relay_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/relay"
)

// A lottery draw that won nothing is never a claims row: the relay counts its outbox
// entry committed once its draws row exists (trimmed, not republished) and republishes
// one whose row does not exist yet, like any durable claim.
func TestRelayTrimsSettledNoPrizeDraws(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 1, PerUser: 1,
		SKUs: []testenv.SKU{{SKU: "p", Stock: 1, Value: 5, Weight: 0}}})
	isolate(t, e, c.ID)
	cl := claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil)
	var ids [2]string
	for i := range ids {
		r := &claimer.Request{RequestID: fmt.Sprintf("rq-%d", i), CampaignID: c.ID, SKU: "x",
			UserID: fmt.Sprintf("u-%d", i), DeviceID: "d", IP: "10.0.0.1"}
		if err := cl.Do(ctx, r); err != nil || r.Code != claim.CodeNoPrize {
			t.Fatalf("draw %d: %s %v", i, claim.ReasonOf(r.Code), err)
		}
		ids[i] = r.ClaimID
	}
	// 0 settled (its draws row), the outbox entry left behind (a lost XDEL).
	if _, err := e.PG.Exec(ctx, `INSERT INTO draws (draw_id, campaign_id, request_id, user_id, device_id,
		odds_version, random, outcome, drawn_at) SELECT $2, $1, 'rq-0', 'u-0', 'd', odds_version, 0, 'no_prize', now()
		FROM campaigns WHERE id = $1`, c.ID, ids[0]); err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, e, relay.Config{MinAge: 100 * time.Millisecond, RepublishEvery: time.Hour})
	time.Sleep(150 * time.Millisecond)
	s, err := r.Campaign(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Trimmed != 1 || s.Republished != 1 || s.Dropped != 0 {
		t.Fatalf("stats %+v; want the settled draw trimmed and the other republished", s)
	}
	msgs, _ := e.RDB.XRange(ctx, rkeys.Outbox(c.ID), "-", "+").Result()
	if len(msgs) != 1 || msgs[0].Values["c"] != ids[1] {
		t.Fatalf("outbox after the relay %v; want only %s", msgs, ids[1])
	}
}
