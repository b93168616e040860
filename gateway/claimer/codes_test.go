package claimer_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

// decideOne runs claim.lua for one claim in the gateway's layout.
func decideOne(t *testing.T, e *testenv.Env, c *testenv.Campaign, user, rq string) claim.Outcome {
	t.Helper()
	ctx := testenv.Ctx(t, 5*time.Second)
	k := rkeys.ClaimKeys(c.ID, c.SKU, rq, c.BusinessLine, "", "d-"+user, "10.1.1.1", user)
	keys, args := claim.AppendHeader(nil, nil, 1, time.Hour.Milliseconds(), time.Hour.Milliseconds())
	keys, args = claim.AppendClaim(keys, args, &k, &claim.Args{RequestID: rq, ClaimID: testenv.NewClaimID(c.ID),
		CampaignID: c.ID, SKU: c.SKU, UserID: user, DeviceID: "d-" + user, IP: "10.1.1.1"})
	res, err := scripts.Claim.Run(ctx, e.RDB, keys, args...).Slice()
	if err != nil || !claim.ResultsFor(res, 1) {
		t.Fatalf("claim.lua: %v %v", res, err)
	}
	var o claim.Outcome
	claim.DecodeResult(res, 0, &o)
	return o
}

// A SKU with a code pool: an accepted claim takes one code (in its result and its
// outbox entry), an empty pool is sold_out and takes nothing, and a void gives the code
// back to the pool, from where the next claim gets it.
func TestCodePoolClaimSoldOutAndVoid(t *testing.T) {
	e := testenv.Private(t)
	ctx := context.Background()
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "gift", Stock: 10, Value: 5}}})
	if _, err := e.Cat.PutCodes(ctx, c.ID, "gift", []byte("ONLY-ONE\n")); err != nil {
		t.Fatal(err)
	}
	a := decideOne(t, e, c, "u1", "rq-1")
	if a.Code != claim.CodeAccepted || a.PartnerCode != "ONLY-ONE" {
		t.Fatalf("first claim: %+v", a)
	}
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != 1 || recs[0].Code != "ONLY-ONE" {
		t.Fatalf("outbox %+v, %v", recs, err)
	}
	stock := func() string { v, _ := e.RDB.HGet(ctx, rkeys.SKU(c.ID, "gift"), "stock").Result(); return v }
	before := stock()
	if b := decideOne(t, e, c, "u2", "rq-2"); b.Code != claim.CodeSoldOut || b.PartnerCode != "" {
		t.Fatalf("claim on an empty pool: %+v", b)
	}
	if stock() != before {
		t.Errorf("sold_out on an empty pool took stock: %s -> %s", before, stock())
	}
	// The first claim's produce failed: void.lua (as the gateway, the relay or the
	// settler runs it) gives its code back.
	v, err := scripts.Void.Run(ctx, e.RDB, rkeys.VoidKeys(c.ID, "gift", "rq-1", c.BusinessLine), a.ClaimID, "u1", "").Int()
	if err != nil || v != 1 {
		t.Fatalf("void: %d %v", v, err)
	}
	if m, _ := e.RDB.SMembers(ctx, rkeys.CodePool(c.ID, "gift")).Result(); len(m) != 1 || m[0] != "ONLY-ONE" {
		t.Fatalf("pool after the void %q", m)
	}
	if d := decideOne(t, e, c, "u3", "rq-3"); d.Code != claim.CodeAccepted || d.PartnerCode != "ONLY-ONE" {
		t.Fatalf("claim after the void: %+v", d)
	}
	// A second void of the same claim gives nothing back twice.
	if v, err := scripts.Void.Run(ctx, e.RDB, rkeys.VoidKeys(c.ID, "gift", "rq-1", c.BusinessLine), a.ClaimID, "u1", "").Int(); err != nil || v != 2 {
		t.Fatalf("second void: %d %v", v, err)
	}
	if n, _ := e.RDB.SCard(ctx, rkeys.CodePool(c.ID, "gift")).Result(); n != 0 {
		t.Fatalf("a repeated void put the code back again: pool has %d", n)
	}
}
