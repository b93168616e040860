package main

import (
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/api"
	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/gateway/vouchers"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/expire"
)

// riskctl revoke, against the real Redis and Postgres: a cheater's unredeemed vouchers
// are revoked (GET shows it, redeem refuses), their value goes back to the budgets once
// through the settler's expirer, a redeemed one stays redeemed, one still settling is
// revoked as it lands, and the change is audited under FLASH_ACTOR - as is a block.
func TestRevokeThenRedeem(t *testing.T) {
	e := testenv.New(t)
	camp := e.StockCampaign(100, 10)
	c := claimertest.New(e, nil)
	user, dev := testenv.ID(t, "cheat"), testenv.ID(t, "dev")
	ctx := testenv.Ctx(t, 30*time.Second)
	var bl string
	if err := e.PG.QueryRow(ctx, `SELECT business_line FROM campaigns WHERE id = $1`, camp).Scan(&bl); err != nil {
		t.Fatal(err)
	}
	// Three accepted claims (reserved in Redis), settled as the settler writes them.
	var ids []string
	for range 3 {
		o := claimertest.Claim(t, c, camp, user, dev, "10.9.0.1")
		if o.Code != claim.CodeAccepted {
			t.Fatalf("claim: code %d", o.Code)
		}
		ids = append(ids, o.ClaimID)
	}
	settle := func(id string, claimed time.Time) {
		t.Helper()
		if _, err := e.PG.Exec(ctx, `INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id,
			device_id, ip, value, claimed_at, expires_at, kafka_partition, kafka_offset)
			VALUES ($1, $2, $3, $4, 'rp-50', $5, $6, '10.9.0.1', 50, $7, now() + interval '72 hours', 0, 0)
			ON CONFLICT DO NOTHING`, id, testenv.ID(t, "rq"), camp, bl, user, dev, claimed); err != nil {
			t.Fatal(err)
		}
	}
	settle(ids[0], time.Now().Add(-time.Minute))
	settle(ids[1], time.Now().Add(-time.Minute))
	vs, err := vouchers.New(e.PG)
	if err != nil {
		t.Fatal(err)
	}
	if _, res, err := vs.Redeem(ctx, ids[0], user); err != nil || res != api.RedeemOK {
		t.Fatalf("redeem before the revocation: %d %v", res, err)
	}
	spentBefore, _ := e.RDB.HGet(ctx, rkeys.Meta(camp), "spent").Int64()

	t.Setenv("FLASH_ACTOR", "dave")
	out := mustRiskctl(t, "revoke", "user", user, "--reason", "bot farm", "--json")
	if !strings.Contains(out, `"revoked": 1`) || !strings.Contains(out, `"value": 50`) {
		t.Fatalf("revoke output: %s; want one voucher worth 50", out)
	}
	v, ok, err := vs.Voucher(ctx, ids[1])
	if err != nil || !ok || v.State != "revoked" {
		t.Fatalf("revoked voucher reads %+v %v %v; want state revoked", v, ok, err)
	}
	if _, res, err := vs.Redeem(ctx, ids[1], user); err != nil || res != api.RedeemRevoked {
		t.Fatalf("redeem after the revocation: %d %v; want RedeemRevoked", res, err)
	}
	if v, _, _ := vs.Voucher(ctx, ids[0]); v.State != "redeemed" {
		t.Errorf("a voucher redeemed before the revocation reads %q; want redeemed", v.State)
	}
	// The third claim was pending at the revocation and settles now: revoked on arrival.
	settle(ids[2], time.Now().Add(-30*time.Second))
	if v, _, _ := vs.Voucher(ctx, ids[2]); v.State != "revoked" {
		t.Errorf("a claim settling after the revocation reads %q; want revoked", v.State)
	}
	// The expirer gives the two revoked vouchers' value back, once.
	x, err := expire.New(expire.Config{Interval: time.Second, Batch: 100, MaxBatches: 10, RedisTimeout: 2 * time.Second,
		Campaigns: []string{camp}}, e.RDB, e.PG, testenv.Quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := x.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	spentAfter, _ := e.RDB.HGet(ctx, rkeys.Meta(camp), "spent").Int64()
	if spentBefore-spentAfter != 100 {
		t.Errorf("campaign spent %d -> %d; want 100 given back (two revoked vouchers of 50)", spentBefore, spentAfter)
	}
	var released int64
	if err := e.PG.QueryRow(ctx, `SELECT coalesce(sum(amount), 0) FROM budget_ledger WHERE campaign_id = $1 AND kind = 'release'`, camp).Scan(&released); err != nil || released != 100 {
		t.Errorf("ledger releases %d %v; want 100", released, err)
	}
	if v, _, _ := vs.Voucher(ctx, ids[1]); v.State != "revoked" {
		t.Errorf("after the expirer: %q; want still shown revoked", v.State)
	}
	// Audited, with the actor from FLASH_ACTOR; a block is too.
	var actor, reason string
	if err := e.PG.QueryRow(ctx, `SELECT actor, reason FROM risk_audit WHERE scope = $1 AND action = 'revoke'`, "user:"+user).Scan(&actor, &reason); err != nil ||
		actor != "dave" || reason != "bot farm" {
		t.Errorf("revoke audit: %q %q %v", actor, reason, err)
	}
	mustRiskctl(t, "block", "user", user, "--reason", "bot farm", "--ttl", "1h")
	if err := e.PG.QueryRow(ctx, `SELECT actor FROM risk_audit WHERE scope = $1 AND action = 'block'`, "user:"+user).Scan(&actor); err != nil || actor != "dave" {
		t.Errorf("block audit: %q %v", actor, err)
	}
	blocks, _ := vouchers.NewBlocks(e.RDB)
	if b, err := blocks.Blocked(ctx, user); err != nil || !b {
		t.Errorf("Blocked after riskctl block: %v %v", b, err)
	}
	mustRiskctl(t, "unblock", "user", user)
	if code, _, errs := riskctl(t, "revoke", "ip", "10.9.0.1", "--reason", "x"); code != exitUsage || !strings.Contains(errs, "user or device") {
		t.Errorf("revoke ip: exit %d %s; want usage", code, errs)
	}
	if code, _, errs := riskctl(t, "revoke", "user", user); code != exitUsage || !strings.Contains(errs, "--reason") {
		t.Errorf("revoke without a reason: exit %d %s; want usage", code, errs)
	}
}
