package claimer_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

// BenchmarkRunIDCheck is what claim.lua's run id check (INFO server once per call, when
// the campaign carries a stamp) costs Redis: batches of 64 accepted claims, as the
// claimer sends them under load, on a campaign stamped with this server's run id (the
// check runs) and on one whose stamp was removed (the check is skipped), on a
// redis-server of the benchmark's own. redis-us is the script call's time in INFO
// commandstats. The difference of the two per call is the check's cost. Run on a quiet
// machine:
//
//	go test -run XXX -bench RunIDCheck -benchtime 200x ./gateway/claimer/
func BenchmarkRunIDCheck(b *testing.B) {
	e := testenv.Private(b)
	ctx := context.Background()
	type variant struct {
		name, camp, bl string
		usec           int64
		calls          int
	}
	vs := []*variant{{name: "stamped"}, {name: "unstamped"}}
	for _, v := range vs {
		v.camp = e.StockCampaign(50_000_000, 1)
		v.bl = e.RDB.HGet(ctx, rkeys.Meta(v.camp), "bl").Val()
	}
	if err := e.RDB.HDel(ctx, rkeys.Meta(vs[1].camp), rkeys.FieldRunID).Err(); err != nil {
		b.Fatal(err)
	}
	if e.RDB.HGet(ctx, rkeys.Meta(vs[0].camp), rkeys.FieldRunID).Val() == "" {
		b.Fatal("the warmed campaign carries no run id stamp")
	}
	run := testenv.ID(b, "rid") + "-"
	seq := 0
	const n = 64
	b.ResetTimer()
	for range b.N {
		for _, v := range vs {
			keys := make([]string, 0, n*scripts.ClaimGatewayKeysPerClaim)
			args := []any{n, (24 * time.Hour).Milliseconds(), time.Hour.Milliseconds()}
			for range n {
				seq++
				id := run + strconv.Itoa(seq)
				dev, ip, user := "d"+id, "10.1.0.1", "u"+id
				keys = append(keys, rkeys.Meta(v.camp), rkeys.SKU(v.camp, "rp-50"), rkeys.Request(v.camp, "r"+id), rkeys.Users(v.camp),
					rkeys.BusinessLine(v.bl), rkeys.Outbox(v.camp), rkeys.Inflight(v.camp), rkeys.Rejections(v.camp), rkeys.Meta(v.camp))
				keys = rkeys.AppendClaimRiskKeys(keys, v.camp, dev, ip, user)
				keys = append(keys, rkeys.PartnerQuotas(v.camp))
				args = append(args, "r"+id, v.camp+".c"+id, v.camp, "rp-50", user, dev, ip, "", "") // app channel, no draw
			}
			before := e.CommandStats()
			res, err := scripts.Claim.Run(ctx, e.RDB, keys, args...).Slice()
			if err != nil {
				b.Fatal(err)
			}
			after := e.CommandStats()
			if code := res[0].(int64); code != claim.CodeAccepted {
				b.Fatalf("%s: code %d", v.name, code)
			}
			v.usec += after["evalsha"].Usec - before["evalsha"].Usec + after["eval"].Usec - before["eval"].Usec
			v.calls++
		}
	}
	b.StopTimer()
	for _, v := range vs {
		b.ReportMetric(float64(v.usec)/float64(v.calls), v.name+"-redis-us/call")
	}
	b.ReportMetric(float64(vs[0].usec-vs[1].usec)/float64(vs[0].calls), "check-us/call")
}
