package risk_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

// call is one claim as claim.lua takes it.
type call struct {
	camp, bl, sku, req, user, dev, ip string
}

// claimLayout returns claim.lua's KEYS and ARGV for claims in the gateway's layout (26
// keys and 8 arguments per claim, the campaign has no segment, the app channel), in the
// order gateway/claimer sends them.
func claimLayout(claims []call) ([]string, []any) {
	keys := make([]string, 0, len(claims)*scripts.ClaimGatewayKeysPerClaim)
	args := []any{len(claims), (24 * time.Hour).Milliseconds(), time.Hour.Milliseconds()}
	for _, c := range claims {
		keys = append(keys, rkeys.Meta(c.camp), rkeys.SKU(c.camp, c.sku), rkeys.Request(c.camp, c.req), rkeys.Users(c.camp),
			rkeys.BusinessLine(c.bl), rkeys.Outbox(c.camp), rkeys.Inflight(c.camp), rkeys.Rejections(c.camp), rkeys.Meta(c.camp))
		keys = rkeys.AppendClaimRiskKeys(keys, c.camp, c.dev, c.ip, c.user)
		keys = append(keys, rkeys.PartnerQuotas(c.camp), rkeys.Pushes(c.camp), rkeys.CodePool(c.camp, c.sku))
		args = append(args, c.req, c.camp+".c"+c.req, c.camp, c.sku, c.user, c.dev, c.ip, "")
	}
	return keys, args
}

// runClaims runs claims in one claim.lua call and returns each claim's code.
func runClaims(tb testing.TB, e *testenv.Env, claims []call) []int64 {
	tb.Helper()
	keys, args := claimLayout(claims)
	res, err := scripts.Claim.Run(context.Background(), e.RDB, keys, args...).Slice()
	if err != nil {
		tb.Fatal(err)
	}
	per := scripts.ClaimResultsPerClaim + scripts.ClaimRiskResultsPerClaim
	if len(res) != len(claims)*per {
		tb.Fatalf("%d results for %d claims", len(res), len(claims))
	}
	codes := make([]int64, len(claims))
	for i := range claims {
		codes[i] = res[i*per].(int64)
	}
	return codes
}

// scriptCommands is what ran inside claim.lua between two INFO commandstats readings:
// the client's own commands (the script call, loading it, INFO itself) are left out.
func scriptCommands(before, after map[string]testenv.CommandStat) map[string]int64 {
	d := map[string]int64{}
	for name, st := range after {
		switch name {
		case "evalsha", "eval", "script|load", "script", "info":
			continue
		}
		if n := st.Calls - before[name].Calls; n != 0 {
			d[name] = n
		}
	}
	return d
}

// scriptUsec is the time Redis spent running claim.lua between two readings.
func scriptUsec(before, after map[string]testenv.CommandStat) int64 {
	return after["evalsha"].Usec - before["evalsha"].Usec + after["eval"].Usec - before["eval"].Usec
}

func total(m map[string]int64) int64 {
	var s int64
	for _, n := range m {
		s += n
	}
	return s
}

func breakdown(m map[string]int64, claims int) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, " %s=%.2f", n, float64(m[n])/float64(claims))
	}
	return b.String()
}

// BenchmarkClaimCommands counts the Redis commands claim.lua runs per claim - the
// figure that sets its cost, since every redis.call pays the Lua<->Redis bridge - on a
// redis-server of its own (INFO commandstats; the shared one is never reset or read
// for this), and what a claim costs Redis: redis-us is the script call's time in INFO
// commandstats (elapsed time inside Redis, so it grows when other work preempts it),
// redis-cpu-us the CPU time of Redis's main thread around the call (INFO cpu: the
// script plus parsing the call and answering it, plus a constant bit of the INFO calls
// around it; steadier on a shared machine). Both depend on the machine; the command
// counts do not. Batches of 64 claims of one SKU in the gateway's layout, as the claimer
// sends them under load, in three variants: accepted with no rules set, accepted with
// every rule on (3 velocity rules and the freeze rule), and sold out. Run:
//
//	go test -run XXX -bench ClaimCommands -benchtime 10x ./internal/risk/
func BenchmarkClaimCommands(b *testing.B) {
	e := testenv.Private(b)
	ctx := context.Background()
	variants := []struct {
		name  string
		stock int
		rules []string
		want  int64
	}{
		{"norules", 50_000_000, nil, claim.CodeAccepted},
		{"rules", 50_000_000, []string{"device.max=100", "device.window=1h", "ip.max=1000000", "ip.window=1h",
			"user.max=100", "user.window=1h", "freeze.max=100", "freeze.window=1h", "freeze.for=1h"}, claim.CodeAccepted},
		{"soldout", 1, nil, claim.CodeSoldOut},
	}
	type state struct {
		camp, bl string
		cmds     map[string]int64
		usec     int64
		cpu      time.Duration
		claims   int
	}
	st := make([]state, len(variants))
	run := testenv.ID(b, "cmd") + "-"
	seq := 0
	batch := func(s *state) []call {
		claims := make([]call, 64)
		for i := range claims {
			seq++
			id := run + strconv.Itoa(seq)
			claims[i] = call{camp: s.camp, bl: s.bl, sku: "rp-50", req: "r" + id, user: "u" + id, dev: "d" + id,
				ip: fmt.Sprintf("10.0.%d.%d", seq%16, seq%256/16)}
		}
		return claims
	}
	for i, v := range variants {
		camp := e.StockCampaign(v.stock, 1)
		if v.rules != nil {
			e.SetRules(camp, v.rules...)
		}
		bl, err := e.RDB.HGet(ctx, rkeys.Meta(camp), "bl").Result()
		if err != nil {
			b.Fatal(err)
		}
		st[i] = state{camp: camp, bl: bl, cmds: map[string]int64{}}
		if v.stock == 1 { // sell the one unit
			if c := runClaims(b, e, batch(&st[i])[:1]); c[0] != claim.CodeAccepted {
				b.Fatalf("%s: first claim %d", v.name, c[0])
			}
		}
	}
	b.ResetTimer()
	for range b.N {
		for i, v := range variants {
			s := &st[i]
			claims := batch(s)
			before := e.CommandStats()
			cpu := e.MainThreadCPU()
			codes := runClaims(b, e, claims)
			s.cpu += e.MainThreadCPU() - cpu
			after := e.CommandStats()
			for name, n := range scriptCommands(before, after) {
				s.cmds[name] += n
			}
			s.usec += scriptUsec(before, after)
			s.claims += len(claims)
			for j, c := range codes {
				if c != v.want {
					b.Fatalf("%s: claim %d code %d, want %d", v.name, j, c, v.want)
				}
			}
		}
	}
	b.StopTimer()
	for i, v := range variants {
		s := st[i]
		b.ReportMetric(float64(total(s.cmds))/float64(s.claims), v.name+"-cmds/claim")
		b.ReportMetric(float64(s.usec)/float64(s.claims), v.name+"-redis-us/claim")
		b.ReportMetric(float64(s.cpu.Microseconds())/float64(s.claims), v.name+"-redis-cpu-us/claim")
		b.Logf("%s: %d claims, per claim:%s", v.name, s.claims, breakdown(s.cmds, s.claims))
	}
}
