package risk_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

// BenchmarkClaimScript measures what the risk checks cost inside claim.lua: batches of
// 64 claims (distinct users, devices and request ids; 256 client IPs) called directly,
// one Redis round trip per batch, as the gateway's claimer calls it, in four variants:
//
//   - base: the base layout (no risk keys, no checks) - the script before the risk layer;
//   - norules: the gateway's layout with no rules set (blocks and freezes are still
//     looked up: one MGET per claim, plus the two rule hashes once per batch);
//   - rules: every rule on - device, IP and user velocity and the freeze rule - with
//     limits high enough that every claim is accepted, so each one is counted in 5
//     windows and recorded in them;
//   - shadow: the same rules in shadow mode;
//   - farm: a bot farm under attack - every claim from one device over device.max, so
//     (after the first) each is rejected by the velocity check: the cost of saying no.
//
// Each iteration runs one batch of every variant, interleaved, so a machine shared with
// other work slows them alike; the metrics are claims/s of each variant over its own
// time. Run:
//
//	go test -run XXX -bench ClaimScript -benchtime 2000x ./internal/risk/
func BenchmarkClaimScript(b *testing.B) {
	rules := []string{"device.max=100", "device.window=1h", "ip.max=1000000", "ip.window=1h",
		"user.max=100", "user.window=1h", "freeze.max=100", "freeze.window=1h", "freeze.for=1h"}
	variants := []struct {
		name  string
		risk  bool
		rules []string
		farm  bool // every claim from one device, over its limit: rejected
	}{
		{"base", false, nil, false},
		{"norules", true, nil, false},
		{"rules", true, rules, false},
		{"shadow", true, append(rules[:len(rules):len(rules)], "shadow=on"), false},
		{"farm", true, []string{"device.max=1", "device.window=1h", "ip.max=1000000", "ip.window=1h", "user.max=100", "user.window=1h"}, true},
	}
	e := testenv.New(b)
	ctx := context.Background()
	type state struct {
		camp, bl string
		keys     []string
		args     []any
		took     time.Duration
	}
	st := make([]state, len(variants))
	for i, v := range variants {
		camp := e.StockCampaign(50_000_000, 1)
		if v.rules != nil {
			e.SetRules(camp, v.rules...)
		}
		bl, err := e.RDB.HGet(ctx, rkeys.Meta(camp), "bl").Result()
		if err != nil {
			b.Fatal(err)
		}
		st[i] = state{camp: camp, bl: bl}
	}
	const batch = 64
	seq := 0
	// Ids of this run only: blocks, freezes and freeze windows are global.
	run := testenv.ID(b, "bench") + "-"
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for i, v := range variants {
			s := &st[i]
			camp := s.camp
			s.keys, s.args = s.keys[:0], append(s.args[:0], batch, (24*time.Hour).Milliseconds(), time.Hour.Milliseconds())
			for range batch {
				seq++
				id := run + strconv.Itoa(seq)
				user, dev, ip, req := "u"+id, "d"+id, fmt.Sprintf("10.0.%d.%d", seq%16, seq%256/16), "r"+id
				if v.farm {
					dev = run + "farm"
				}
				s.keys = append(s.keys, rkeys.Meta(camp), rkeys.SKU(camp, "rp-50"), rkeys.Request(camp, req), rkeys.Users(camp),
					rkeys.BusinessLine(s.bl), rkeys.Outbox(camp), rkeys.Inflight(camp), rkeys.Rejections(camp), rkeys.Meta(camp))
				if v.risk {
					s.keys = append(s.keys, rkeys.RiskRules(camp), rkeys.RiskGlobalRules,
						rkeys.Velocity(camp, rkeys.KindDevice, dev), rkeys.Velocity(camp, rkeys.KindIP, ip), rkeys.Velocity(camp, rkeys.KindUser, user),
						rkeys.Block(rkeys.KindDevice, dev), rkeys.Block(rkeys.KindIP, ip), rkeys.Block(rkeys.KindUser, user),
						rkeys.Freeze(rkeys.KindDevice, dev), rkeys.Freeze(rkeys.KindUser, user),
						rkeys.FreezeWindow(rkeys.KindDevice, dev), rkeys.FreezeWindow(rkeys.KindUser, user),
						rkeys.ShadowRejections(camp), rkeys.RiskIndex, rkeys.PartnerQuotas(camp))
				}
				s.args = append(s.args, req, camp+".c"+id, camp, "rp-50", user, dev, ip)
				if v.risk {
					s.args = append(s.args, "", "") // the app channel, no lottery draw
				}
			}
			start := time.Now()
			res, err := scripts.Claim.Run(ctx, e.RDB, s.keys, s.args...).Slice()
			s.took += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if want := int64(claim.CodeAccepted); v.farm {
				if res[len(res)-scripts.ClaimResultsPerClaim-scripts.ClaimRiskResultsPerClaim-scripts.ClaimDrawResultsPerClaim].(int64) != claim.CodeDeviceVelocity {
					b.Fatalf("farm: last claim code %v", res[len(res)-15])
				}
			} else if res[0].(int64) != want {
				b.Fatalf("%s: claim code %v", v.name, res[0])
			}
		}
	}
	b.StopTimer()
	for i, v := range variants {
		b.ReportMetric(float64(b.N*batch)/st[i].took.Seconds(), v.name+"-claims/s")
	}
	// Drop the campaigns' outbox and hashes so repeated runs do not grow the shared
	// Redis (the idempotency records and windows expire by themselves).
	for _, s := range st {
		e.RDB.Del(ctx, rkeys.Outbox(s.camp), rkeys.Inflight(s.camp), rkeys.Users(s.camp))
	}
}
