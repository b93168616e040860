package points_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// hold does what the claimer's points step does before claim.lua: the index entry in
// the campaign's slot, then the reservation in the user's slot.
func (e *env) hold(t *testing.T, campaign, req, user string, price int64) {
	t.Helper()
	ctx := context.Background()
	if err := e.rdb.HSet(ctx, rkeys.PointsHolds(campaign), rkeys.PointsHoldField(req, user),
		strconv.FormatInt(time.Now().UnixMilli(), 10)+":tk").Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := e.svc.Reserve(ctx, user, rkeys.PointsReservation(campaign, req), "tk", price); err != nil || got != points.Reserved {
		t.Fatalf("reserve %s: %s %v", user, got, err)
	}
}

// TestSweepResolvesHolds: the settler's sweep, past its grace, spends a hold whose claim
// is a row (the settler died between the row and the spend), gives back a hold whose
// claim was never made (the gateway died between reserve and claim.lua) and one whose
// claim was voided, waits on a claim still A, and leaves a hold younger than its grace
// alone. A second sweep changes nothing.
func TestSweepResolvesHolds(t *testing.T) {
	e := newEnv(t, 0)
	ctx := context.Background()
	tenv := testenv.New(t)
	const price = 400
	cmp := tenv.Campaign(testenv.Spec{Kind: "points_item", Points: price, SKUs: []testenv.SKU{{SKU: "item", Stock: 10, Value: 1}}}).ID
	rowU, neverU, voidU, pendU, youngU := testenv.ID(t, "row"), testenv.ID(t, "never"), testenv.ID(t, "void"), testenv.ID(t, "pend"), testenv.ID(t, "young")
	for _, u := range []string{rowU, neverU, voidU, pendU, youngU} {
		e.fund(t, u, price)
	}
	e.hold(t, cmp, "r-row", rowU, price)
	e.hold(t, cmp, "r-never", neverU, price)
	e.hold(t, cmp, "r-void", voidU, price)
	e.hold(t, cmp, "r-pend", pendU, price)
	for _, c := range []struct{ user, req string }{{rowU, "r-row"}, {voidU, "r-void"}, {pendU, "r-pend"}} {
		a, err := testenv.ScriptClaim(ctx, e.rdb, cmp, "item", c.user, c.req)
		if err != nil || a.Code != claim.CodeAccepted {
			t.Fatalf("claim %s: %+v %v", c.user, a, err)
		}
	}
	// r-row becomes a row the way a settler writes it, without the points confirm.
	recs, err := testenv.OutboxRecords(ctx, e.rdb, cmp)
	if err != nil {
		t.Fatal(err)
	}
	var rowRec, voidRec []claim.Record
	for _, r := range recs {
		switch r.RequestID {
		case "r-row":
			rowRec = append(rowRec, r)
		case "r-void":
			voidRec = append(voidRec, r)
		}
	}
	if len(rowRec) != 1 || len(voidRec) != 1 {
		t.Fatalf("outbox %+v", recs)
	}
	if _, err := testenv.Write(ctx, e.rdb, e.pg, rowRec, 0, []int64{0}); err != nil {
		t.Fatal(err)
	}
	// r-void is given back by void.lua as a gateway does after a failed produce.
	vr := voidRec[0]
	v := string(claim.AppendIdem(nil, &claim.Idem{State: claim.IdemVoided, ClaimID: vr.ClaimID, Value: vr.Value,
		SKU: vr.SKU, UserID: vr.UserID, DeviceID: vr.DeviceID}))
	if err := e.rdb.Set(ctx, rkeys.Request(cmp, "r-void"), v, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}

	h, err := points.NewHolds(e.svc, points.HoldsConfig{Grace: time.Second}, testenv.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	e.hold(t, cmp, "r-young", youngU, price)
	res, err := h.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Confirmed < 1 || res.GivenBack < 2 || res.Waiting < 1 {
		t.Fatalf("sweep %+v, want 1 confirmed, 2 given back, 1 waiting", res)
	}
	check := func(u string, ledger, spends int64, held bool) {
		t.Helper()
		got, _, _, hot, built := e.books(t, u)
		var n int64
		_ = e.pg.QueryRow(ctx, `SELECT count(*) FROM points_ledger WHERE user_id = $1 AND kind = 'spend'`, u).Scan(&n)
		wantHot := ledger
		if held {
			wantHot -= price
		}
		if got != ledger || n != spends || !built || hot != wantHot {
			t.Errorf("%s: ledger %d spends %d spendable %d, want %d %d %d", u, got, n, hot, ledger, spends, wantHot)
		}
	}
	check(rowU, 0, 1, false)
	check(neverU, price, 0, false)
	check(voidU, price, 0, false)
	check(pendU, price, 0, true)
	check(youngU, price, 0, true)
	left, _ := e.rdb.HKeys(ctx, rkeys.PointsHolds(cmp)).Result()
	if len(left) != 2 {
		t.Errorf("holds index after the sweep: %v, want the pending and the young entries", left)
	}
	if _, err := h.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	check(rowU, 0, 1, false)
	check(neverU, price, 0, false)
}
