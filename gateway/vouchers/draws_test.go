package vouchers

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/internal/voucher"
	"github.com/flashgate/flashgate/scripts"
)

// The no-prize draw lookup against a real Redis (a private one: the test bounds the
// outbox it reads) and Postgres: a draw in flight is pending with its user and time, on
// the first page of the outbox or a later one; one beyond MaxOutbox, with no row, cannot
// be told (ErrUndecided); a voided draw, an
// unknown id, a won draw's row and a voucher campaign's id are no no-prize draw; a
// draws row is settled.
func TestNoPrizeDrawLookup(t *testing.T) {
	e := testenv.Private(t)
	ctx := testenv.Ctx(t, time.Minute)
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 10, PerUser: 5,
		SKUs: []testenv.SKU{{SKU: "phone", Stock: 1, Value: 100, Weight: 0}}})
	if err := e.RDB.HSet(ctx, rkeys.RiskRules(c.ID), "device.max", 0, "ip.max", 0, "user.max", 0, "freeze.max", 0, "shadow", 0).Err(); err != nil {
		t.Fatal(err)
	}
	odds, err := e.RDB.HGet(ctx, rkeys.Meta(c.ID), "odds").Result()
	if err != nil || len(odds) < 16 {
		t.Fatalf("odds %q, %v", odds, err)
	}
	// draw decides one no-prize draw with claim.lua (r = 0: the no-prize band), as the
	// gateway does; nothing is produced, so it stays in flight.
	draw := func(user, rq string) claim.Outcome {
		t.Helper()
		id := testenv.NewClaimID(c.ID)
		keys, args := claim.AppendHeader(nil, nil, 1, (24 * time.Hour).Milliseconds(), time.Hour.Milliseconds())
		k := rkeys.ClaimKeys(c.ID, "", rq, c.BusinessLine, "", "d-"+user, "10.0.0.1", user)
		keys, args = claim.AppendClaim(keys, args, &k, &claim.Args{RequestID: rq, ClaimID: id, CampaignID: c.ID,
			UserID: user, DeviceID: "d-" + user, IP: "10.0.0.1", Draw: string(claim.AppendDrawArg(nil, odds[:16], 0))})
		res, err := scripts.Claim.Run(ctx, e.RDB, keys, args...).Slice()
		if err != nil || !claim.ResultsFor(res, 1) {
			t.Fatalf("claim.lua: %v", err)
		}
		var o claim.Outcome
		claim.DecodeResult(res, 0, &o)
		if o.Code != claim.CodeNoPrize || o.ClaimID != id {
			t.Fatalf("draw %s: %+v; want no_prize", rq, o)
		}
		return o
	}
	d, err := NewDraws(e.PG, e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	older, newer := draw("u-1", "rq-1"), draw("u-1", "rq-2")

	got, ok, err := d.NoPrizeDraw(ctx, older.ClaimID)
	want := voucher.Draw{DrawID: older.ClaimID, CampaignID: c.ID, UserID: "u-1", State: voucher.DrawPending,
		DrawnAt: time.UnixMilli(older.ClaimedAtMs).UTC()}
	if err != nil || !ok || got != want {
		t.Fatalf("a draw in flight: %+v, %v, %v; want %+v", got, ok, err, want)
	}
	d.MaxOutbox = 1
	if _, ok, err := d.NoPrizeDraw(ctx, older.ClaimID); ok || !errors.Is(err, ErrUndecided) {
		t.Fatalf("a draw beyond MaxOutbox: %v, %v; want ErrUndecided", ok, err)
	}
	if got, ok, err := d.NoPrizeDraw(ctx, newer.ClaimID); err != nil || !ok || got.State != voucher.DrawPending {
		t.Fatalf("the newest draw with MaxOutbox 1: %+v, %v, %v", got, ok, err)
	}
	d.MaxOutbox = defaultMaxOutbox

	c.Void(t, claim.Record{ClaimID: newer.ClaimID, RequestID: "rq-2", UserID: "u-1"})
	if _, ok, err := d.NoPrizeDraw(ctx, newer.ClaimID); ok || err != nil {
		t.Fatalf("a voided draw: %v, %v; want none", ok, err)
	}
	if _, ok, err := d.NoPrizeDraw(ctx, testenv.NewClaimID(c.ID)); ok || err != nil {
		t.Fatalf("an unknown id: %v, %v; want none", ok, err)
	}
	// Behind more than a page of newer draws: found on the second page; not within a
	// bound of one page.
	for i := 0; i < outboxPage; i++ {
		draw(fmt.Sprintf("p-%d", i), fmt.Sprintf("rq-p-%d", i))
	}
	if got, ok, err := d.NoPrizeDraw(ctx, older.ClaimID); err != nil || !ok || got.DrawID != older.ClaimID {
		t.Fatalf("a draw behind %d newer ones: %+v, %v, %v", outboxPage, got, ok, err)
	}
	d.MaxOutbox = outboxPage
	if _, ok, err := d.NoPrizeDraw(ctx, older.ClaimID); ok || !errors.Is(err, ErrUndecided) {
		t.Fatalf("a draw beyond a bound of one page: %v, %v; want ErrUndecided", ok, err)
	}
	d.MaxOutbox = defaultMaxOutbox

	// Settled: draws rows as the settler writes them, one won nothing, one won.
	settled, won := testenv.NewClaimID(c.ID), testenv.NewClaimID(c.ID)
	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	if _, err := e.PG.Exec(ctx, `INSERT INTO draws (draw_id, campaign_id, request_id, user_id, device_id, odds_version,
		random, pick, outcome, sku, value, drawn_at) VALUES
		($1, $3, 'rq-s', 'u-2', 'd-u-2', $4, 0, NULL, 'no_prize', NULL, 0, $5),
		($2, $3, 'rq-w', 'u-2', 'd-u-2', $4, 0, 'phone', 'won', 'phone', 100, $5)`,
		settled, won, c.ID, odds[:16], at); err != nil {
		t.Fatal(err)
	}
	got, ok, err = d.NoPrizeDraw(ctx, settled)
	want = voucher.Draw{DrawID: settled, CampaignID: c.ID, UserID: "u-2", State: voucher.DrawSettled, DrawnAt: at}
	if err != nil || !ok || got != want {
		t.Fatalf("a settled draw: %+v, %v, %v; want %+v", got, ok, err, want)
	}
	if _, ok, err := d.NoPrizeDraw(ctx, won); ok || err != nil {
		t.Fatalf("a won draw's row: %v, %v; want none (a won draw is a claim)", ok, err)
	}

	// Not a lottery: no draw, whatever the id.
	v := e.Campaign(testenv.Spec{})
	if _, ok, err := d.NoPrizeDraw(ctx, testenv.NewClaimID(v.ID)); ok || err != nil {
		t.Fatalf("a voucher campaign's id: %v, %v; want none", ok, err)
	}
}
