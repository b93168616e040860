package claimer_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// A Redis that is not the run a campaign was warmed or rebuilt on (restarted from an
// older AOF copy, or a promoted replica: another run id) decides nothing for it - not
// even a replay of a record that may be rolled back - until recovery re-stamps it:
// NOT_WARM (503), nothing taken, and the gateway's recovery is kicked at once. Played
// here by giving the campaign's meta another server's run id.
func TestOtherRunIDDecidesNothing(t *testing.T) {
	e := newEnv(t)
	testenv.RequireBroker(t)
	var kicks atomic.Int64
	c := e.claimerWith(testenv.NewKfake(t).Brokers(), 10*time.Second, claimer.Config{OnNotWarm: func(string) { kicks.Add(1) }}, nil)
	cmp := e.campaign("", campaignSpec{start: -time.Minute})
	ctx := context.Background()
	if rid := e.rdb.HGet(ctx, rkeys.Meta(cmp), rkeys.FieldRunID).Val(); rid == "" {
		t.Fatal("the warmed campaign carries no run id stamp")
	}
	first := req(cmp, "rp-50", "u1", "r1")
	if err := e.do(c, first); err != nil || first.Code != claim.CodeAccepted {
		t.Fatalf("claim on the stamped run: %s %v", reason(first.Code), err)
	}
	if err := e.rdb.HSet(ctx, rkeys.Meta(cmp), rkeys.FieldRunID, "0000000000000000000000000000000000000000").Err(); err != nil {
		t.Fatal(err)
	}
	before := e.decision(cmp)
	for _, r := range []*claimer.Request{req(cmp, "rp-50", "u2", "r2"), req(cmp, "rp-50", "u1", "r1")} {
		err := e.do(c, r)
		if !errors.Is(err, claimer.ErrUnavailable) || r.Code != claim.CodeNotWarm {
			t.Fatalf("claim %s on another run: code %s err %v; want NOT_WARM (503)", r.RequestID, reason(r.Code), err)
		}
	}
	if d := e.changes(before, e.decision(cmp)); d != "" {
		t.Fatalf("counters changed on another run:\n%s", d)
	}
	if e.rdb.Exists(ctx, rkeys.Request(cmp, "r2")).Val() != 0 {
		t.Fatal("a NOT_WARM answer was remembered")
	}
	if kicks.Load() < 2 {
		t.Fatalf("recovery kicked %d times, want once per NOT_WARM answer", kicks.Load())
	}

	// Once the campaign is stamped with this server again (what recovery's rebuild
	// does), the replay is answered again: the original claim, nothing new taken.
	rid, err := recovery.RunID(ctx, e.rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HSet(ctx, rkeys.Meta(cmp), rkeys.FieldRunID, rid).Err(); err != nil {
		t.Fatal(err)
	}
	stamped := e.decision(cmp)
	again := req(cmp, "rp-50", "u1", "r1")
	if err := e.do(c, again); err != nil || again.Code != claim.CodeAccepted || !again.Replayed || again.ClaimID != first.ClaimID {
		t.Fatalf("replay on the re-stamped run: %s replayed=%v claim %s (%v); want claim %s", reason(again.Code), again.Replayed, again.ClaimID, err, first.ClaimID)
	}
	if d := e.changes(stamped, e.decision(cmp)); d != "" {
		t.Fatalf("a replay changed the counters:\n%s", d)
	}
}
