package scripts_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

// TestClaimThroughTheCodec drives claim.lua, durable.lua and void.lua through the Go
// codec against the real Redis: a batch of three (an accepted claim, its replay in the
// same call, a second user limited by nothing), the named result fields, the
// idempotency record (claim.ParseIdem) and the outbox entry (claim.FromOutbox) the
// script wrote, then the durable mark (A -> D) and a void of the other claim (-> V).
func TestClaimThroughTheCodec(t *testing.T) {
	rdb := testenv.Redis(t)
	camp, bl := partnerCampaign(t, rdb, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := runClaims(t, rdb, camp, bl, []pclaim{{"r1", "u1", ""}, {"r1", "u1", ""}, {"r2", "u2", "push:x"}})
	a, replay, b := out[0], out[1], out[2]
	if a.Code != claim.CodeAccepted || a.Replayed || a.ClaimID != camp+".cr1" || a.Value != 10 || a.OutboxID == "" {
		t.Fatalf("first claim: %+v", a)
	}
	if a.ExpiresAtMs-a.ClaimedAtMs != 3_600_000 || a.DecidedAtMs != a.ClaimedAtMs || claim.DecidedAtMs(nil) != 0 {
		t.Fatalf("times: %+v", a)
	}
	if a.SeenDevice != -1 || a.SeenIP != -1 || a.SeenUser != -1 || a.Flags != 0 {
		t.Fatalf("risk seen with every rule off: %+v", a)
	}
	// The replay in the same call finds the record A: in flight, nothing taken.
	if replay.Code != claim.CodeInFlight || !replay.Replayed || replay.ClaimID != a.ClaimID {
		t.Fatalf("replay: %+v", replay)
	}
	if b.Code != claim.CodeAccepted || b.ClaimID != camp+".cr2" {
		t.Fatalf("second claim: %+v", b)
	}
	rec, err := rdb.Get(ctx, rkeys.Request(camp, "r1")).Result()
	if err != nil {
		t.Fatal(err)
	}
	idem, ok := claim.ParseIdem(rec)
	want := claim.Idem{State: claim.IdemAccepted, ClaimID: a.ClaimID, Value: 10, ClaimedAtMs: a.ClaimedAtMs,
		ExpiresAtMs: a.ExpiresAtMs, OutboxID: a.OutboxID, SKU: "rp-10", UserID: "u1", DeviceID: "d-r1"}
	if !ok || idem != want {
		t.Fatalf("idempotency record %q\n parsed %+v\n  want %+v", rec, idem, want)
	}
	if got := string(claim.AppendIdem(nil, &idem)); got != rec {
		t.Fatalf("AppendIdem %q, claim.lua wrote %q", got, rec)
	}
	msgs, err := rdb.XRange(ctx, rkeys.Outbox(camp), "-", "+").Result()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("outbox: %d entries, %v", len(msgs), err)
	}
	r := claim.FromOutbox(camp, msgs[1].ID, msgs[1].Values)
	if r.ClaimID != b.ClaimID || r.RequestID != "r2" || r.BusinessLine != bl || r.Channel != "push:x" ||
		r.Value != 10 || r.ClaimedAtMs != b.ClaimedAtMs || r.ExpiresAtMs != b.ExpiresAtMs || r.OutboxID != b.OutboxID {
		t.Fatalf("outbox entry %+v for %+v", r, b)
	}
	// durable.lua: A -> D.
	if n, err := scripts.Durable.Run(ctx, rdb, []string{rkeys.Request(camp, "r1")}, a.ClaimID).Int64Slice(); err != nil || n[0] != 1 {
		t.Fatalf("durable: %v %v", n, err)
	}
	if st, c := claim.IdemState(rdb.Get(ctx, rkeys.Request(camp, "r1")).Val()); st != claim.IdemDurable || c != a.ClaimID {
		t.Fatalf("after durable: %c %s", st, c)
	}
	// void.lua gives the second claim back: V, and the unit is on sale again.
	keys := []string{rkeys.Meta(camp), rkeys.SKU(camp, "rp-10"), rkeys.Request(camp, "r2"), rkeys.Users(camp),
		rkeys.BusinessLine(bl), rkeys.Outbox(camp), rkeys.Inflight(camp), rkeys.PartnerQuotas(camp)}
	if v, err := scripts.Void.Run(ctx, rdb, keys, b.ClaimID, "u2", "push:x").Int(); err != nil || v != scripts.VoidDone {
		t.Fatalf("void: %d %v", v, err)
	}
	if st, _ := claim.IdemState(rdb.Get(ctx, rkeys.Request(camp, "r2")).Val()); st != claim.IdemVoided {
		t.Fatalf("after void: %c", st)
	}
	if got := hgetInt(t, rdb, rkeys.SKU(camp, "rp-10"), "stock"); got != 99 {
		t.Fatalf("stock after one kept and one voided claim: %d, want 99", got)
	}
}
