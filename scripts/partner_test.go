package scripts_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk/riskstate"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

// partnerCampaign warms a started campaign the way catalog.warm does (100 units of
// value 10, budgets no test exhausts, per-user limit 1) with partner quotas.
func partnerCampaign(t *testing.T, rdb *redis.Client, quotas map[string]int64) (camp, bl string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// What catalog.warm does first: the risk state (and its marker) in Redis, without
	// which claim.lua answers NOT_WARM.
	runID, err := recovery.RunID(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := riskstate.Ensure(ctx, testenv.PG(t), rdb, runID); err != nil {
		t.Fatal(err)
	}
	camp, bl = testenv.ID(t, "pq"), testenv.ID(t, "pqbl")
	now := time.Now()
	_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, rkeys.Meta(camp), "bl", bl, "starts", now.Add(-time.Minute).UnixMilli(), "ends", now.Add(time.Hour).UnixMilli(),
			"limit", 1, "budget", 1_000_000, "ttl", 3_600_000, "paused", "0", "seg", "", "spent", 0, "taken", 0)
		p.HSet(ctx, rkeys.SKU(camp, "rp-10"), "stock", 100, "value", 10, "total", 100, "taken", 0)
		p.HSet(ctx, rkeys.BusinessLine(bl), "budget", 1_000_000, "spent", 0)
		p.HSet(ctx, rkeys.RiskRules(camp), "device.max", 0, "ip.max", 0, "user.max", 0, "freeze.max", 0, "shadow", 0)
		for partner, q := range quotas {
			p.HSet(ctx, rkeys.PartnerQuotas(camp), rkeys.PartnerQuotaField(partner), q)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rdb.Del(ctx, rkeys.Meta(camp), rkeys.SKU(camp, "rp-10"), rkeys.BusinessLine(bl), rkeys.RiskRules(camp),
			rkeys.PartnerQuotas(camp), rkeys.Users(camp), rkeys.Outbox(camp), rkeys.Inflight(camp), rkeys.Rejections(camp))
	})
	return camp, bl
}

type pclaim struct{ req, user, channel string }

// runGatewayLayout runs claims in one claim.lua call in the gateway's layout and returns
// each one's code and claim id.
func runGatewayLayout(t *testing.T, rdb *redis.Client, camp, bl string, claims []pclaim) ([]int64, []string) {
	t.Helper()
	res := runClaims(t, rdb, camp, bl, claims)
	codes, ids := make([]int64, len(claims)), make([]string, len(claims))
	for i := range claims {
		codes[i], ids[i] = int64(res[i].Code), res[i].ClaimID
	}
	return codes, ids
}

// runClaims runs claims in one claim.lua call built and decoded by the codec
// (internal/claim batch.go), as the gateway sends them.
func runClaims(t *testing.T, rdb *redis.Client, camp, bl string, claims []pclaim) []claim.Outcome {
	t.Helper()
	keys, args := claim.AppendHeader(nil, nil, len(claims), 60_000, 60_000)
	for _, c := range claims {
		dev, ip := "d-"+c.req, "198.18.7.7"
		k := rkeys.ClaimKeys(camp, "rp-10", c.req, bl, "", dev, ip, c.user)
		keys, args = claim.AppendClaim(keys, args, &k, &claim.Args{RequestID: c.req, ClaimID: camp + ".c" + c.req,
			CampaignID: camp, SKU: "rp-10", UserID: c.user, DeviceID: dev, IP: ip, Channel: c.channel})
	}
	if len(keys) != len(claims)*claim.BatchKeysPerClaim || len(args) != claim.BatchHeaderArgs+len(claims)*claim.BatchArgsPerClaim {
		t.Fatalf("layout: %d keys %d args", len(keys), len(args))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := scripts.Claim.Run(ctx, rdb, keys, args...).Slice()
	if err != nil {
		t.Fatalf("claim.lua: %v", err)
	}
	if !claim.ResultsFor(res, len(claims)) {
		t.Fatalf("claim.lua answered %d values for %d claims", len(res), len(claims))
	}
	out := make([]claim.Outcome, len(claims))
	for i := range out {
		claim.DecodeResult(res, i, &out[i])
	}
	return out
}

func hgetInt(t *testing.T, rdb *redis.Client, key, field string) int64 {
	t.Helper()
	v, err := rdb.HGet(context.Background(), key, field).Int64()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return v
}

// TestPartnerQuotaInTheClaimStep: a partner with quota 5 makes 20 claims (in batches
// of 8, so one script call sees the quota run out midway): exactly 5 are accepted, the
// other 15 are refused partner_quota and take nothing - stock, budgets and the outbox
// move by the 5 accepted only. A partner without a quota in the campaign gets nothing;
// the app channel ignores quotas.
func TestPartnerQuotaInTheClaimStep(t *testing.T) {
	rdb := testenv.Redis(t)
	camp, bl := partnerCampaign(t, rdb, map[string]int64{"acme": 5})
	var accepted, refused int
	for b := 0; b < 20; b += 8 {
		var cs []pclaim
		for i := b; i < min(b+8, 20); i++ {
			s := strconv.Itoa(i)
			cs = append(cs, pclaim{req: "r" + s, user: "acme:u" + s, channel: "partner:acme"})
		}
		codes, _ := runGatewayLayout(t, rdb, camp, bl, cs)
		for i, c := range codes {
			switch c {
			case claim.CodeAccepted:
				accepted++
			case claim.CodePartnerQuota:
				refused++
			default:
				t.Fatalf("claim %s: code %d", cs[i].req, c)
			}
		}
	}
	if accepted != 5 || refused != 15 {
		t.Fatalf("accepted %d, refused %d; want 5 and 15", accepted, refused)
	}
	if got := hgetInt(t, rdb, rkeys.PartnerQuotas(camp), rkeys.PartnerTakenField("acme")); got != 5 {
		t.Errorf("acme taken %d, want 5", got)
	}
	if s, m, b := hgetInt(t, rdb, rkeys.SKU(camp, "rp-10"), "stock"), hgetInt(t, rdb, rkeys.Meta(camp), "spent"),
		hgetInt(t, rdb, rkeys.BusinessLine(bl), "spent"); s != 95 || m != 50 || b != 50 {
		t.Errorf("stock %d, campaign spent %d, business line spent %d; want 95, 50, 50", s, m, b)
	}
	if n, _ := rdb.XLen(context.Background(), rkeys.Outbox(camp)).Result(); n != 5 {
		t.Errorf("outbox holds %d claims, want 5", n)
	}
	if got := hgetInt(t, rdb, rkeys.Rejections(camp), strconv.Itoa(claim.CodePartnerQuota)); got != 15 {
		t.Errorf("partner_quota rejections counted %d, want 15", got)
	}
	// A retry of a refused request is answered from memory, as every 409 is.
	if codes, _ := runGatewayLayout(t, rdb, camp, bl, []pclaim{{"r19", "acme:u19", "partner:acme"}}); codes[0] != claim.CodePartnerQuota {
		t.Errorf("retry of a refused partner claim: code %d", codes[0])
	}
	// No quota at all in this campaign; the app channel is not limited by quotas.
	codes, _ := runGatewayLayout(t, rdb, camp, bl, []pclaim{{"x1", "other:u1", "partner:other"}, {"x2", "u-app", ""},
		{"x3", "u-push", "push:spring"}})
	if codes[0] != claim.CodePartnerQuota || codes[1] != claim.CodeAccepted || codes[2] != claim.CodeAccepted {
		t.Errorf("partner without quota, app, push: codes %v; want %d, 1, 1", codes, claim.CodePartnerQuota)
	}
	// The channel travels in the outbox entry (the relay builds the record from it).
	msgs, err := rdb.XRange(context.Background(), rkeys.Outbox(camp), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	chans := map[string]int{}
	for _, m := range msgs {
		ch, _ := m.Values["h"].(string)
		chans[ch]++
	}
	if chans["partner:acme"] != 5 || chans[""] != 1 || chans["push:spring"] != 1 {
		t.Errorf("outbox channels %v; want 5 partner:acme, 1 app (\"\"), 1 push:spring", chans)
	}
}

// TestVoidGivesPartnerQuotaBackOnce: voiding a partner's claim (its produce failed)
// gives one back to its quota, once however often void.lua runs; the quota then lets
// exactly one more claim through.
func TestVoidGivesPartnerQuotaBackOnce(t *testing.T) {
	rdb := testenv.Redis(t)
	ctx := context.Background()
	camp, bl := partnerCampaign(t, rdb, map[string]int64{"acme": 2})
	codes, ids := runGatewayLayout(t, rdb, camp, bl, []pclaim{{"r1", "acme:u1", "partner:acme"}, {"r2", "acme:u2", "partner:acme"},
		{"r3", "acme:u3", "partner:acme"}})
	if codes[0] != 1 || codes[1] != 1 || codes[2] != claim.CodePartnerQuota {
		t.Fatalf("codes %v; want 1, 1, partner_quota", codes)
	}
	voidKeys := []string{rkeys.Meta(camp), rkeys.SKU(camp, "rp-10"), rkeys.Request(camp, "r1"), rkeys.Users(camp),
		rkeys.BusinessLine(bl), rkeys.Outbox(camp), rkeys.Inflight(camp), rkeys.PartnerQuotas(camp)}
	for i, want := range []int{scripts.VoidDone, scripts.VoidAlready, scripts.VoidAlready} {
		got, err := scripts.Void.Run(ctx, rdb, voidKeys, ids[0], "acme:u1", "partner:acme").Int()
		if err != nil || got != want {
			t.Fatalf("void #%d: %d, %v; want %d", i+1, got, err, want)
		}
		if taken := hgetInt(t, rdb, rkeys.PartnerQuotas(camp), rkeys.PartnerTakenField("acme")); taken != 1 {
			t.Fatalf("after void #%d acme taken %d, want 1", i+1, taken)
		}
	}
	codes, _ = runGatewayLayout(t, rdb, camp, bl, []pclaim{{"r4", "acme:u4", "partner:acme"}, {"r5", "acme:u5", "partner:acme"}})
	if codes[0] != 1 || codes[1] != claim.CodePartnerQuota {
		t.Errorf("after the void: codes %v; want one more accepted, then partner_quota", codes)
	}
	// An app claim's void leaves every partner's count alone.
	codes, ids = runGatewayLayout(t, rdb, camp, bl, []pclaim{{"a1", "u-app", ""}})
	if codes[0] != 1 {
		t.Fatalf("app claim: %d", codes[0])
	}
	voidKeys[2] = rkeys.Request(camp, "a1")
	if got, err := scripts.Void.Run(ctx, rdb, voidKeys, ids[0], "u-app", "").Int(); err != nil || got != scripts.VoidDone {
		t.Fatalf("void app claim: %d, %v", got, err)
	}
	if taken := hgetInt(t, rdb, rkeys.PartnerQuotas(camp), rkeys.PartnerTakenField("acme")); taken != 2 {
		t.Errorf("after an app void acme taken %d, want 2", taken)
	}
}
