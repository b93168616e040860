package claimer_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/testenv"
)

// bigCampaign has stock and budgets no benchmark exhausts, and ends soon after the run
// so its idempotency records leave the shared Redis (AcceptGrace is 1s in benchConfig).
func (e *env) bigCampaign(stock int) string {
	e.t.Helper()
	bl := testenv.ID(e.t, "bl")
	if err := e.cat.PutBusinessLine(context.Background(), bl, 1<<50); err != nil {
		e.t.Fatal(err)
	}
	return e.campaign(bl, campaignSpec{start: -time.Minute, end: 15 * time.Minute, budget: 1 << 50,
		skus: fmt.Sprintf(`[{"sku":"rp-1","stock":%d,"value":1}]`, stock)})
}

func benchConfig(batch int, short bool) claimer.Config {
	return claimer.Config{MaxBatch: batch, Workers: 4, AcceptGrace: time.Second, RejectTTL: time.Second,
		DisableShortCircuit: !short, RouteTTL: time.Second}
}

// claims returns n distinct requests (user, device, IP and request_id) for campaign.
func claims(campaign, prefix string, n int) []*claimer.Request {
	rs := make([]*claimer.Request, n)
	for i := range rs {
		id := prefix + strconv.Itoa(i)
		rs[i] = &claimer.Request{RequestID: id, CampaignID: campaign, SKU: "rp-1", UserID: id, DeviceID: id,
			IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}
	}
	return rs
}

// drive runs reqs through c from conc goroutines and returns the number of errors and
// of answers other than want.
func drive(c *claimer.Claimer, reqs []*claimer.Request, conc int, want int) (errs, wrong int64) {
	var next atomic.Int64
	var e, w atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(reqs)) {
					return
				}
				if err := c.Do(ctx, reqs[i]); err != nil {
					e.Add(1)
				} else if reqs[i].Code != want {
					w.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return e.Load(), w.Load()
}

// Claims through the claimer against the real Redis and broker: per-request script
// calls (batch 1) against batches of up to 64, accepted claims (script + produce +
// durable mark), 64 claims in flight.
//
//	go test -run '^$' -bench 'Claimer' -benchtime 20000x ./gateway/claimer/
func BenchmarkClaimerAccepted(b *testing.B) {
	testenv.RequireBroker(b)
	for _, batch := range []int{1, 64} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			e := newEnv(b)
			c := e.claimerWith(testenv.Brokers(), 10*time.Second, benchConfig(batch, true), nil)
			cmp := e.bigCampaign(1_000_000_000)
			reqs := claims(cmp, "a", b.N)
			b.ReportAllocs()
			b.ResetTimer()
			errs, wrong := drive(c, reqs, 64, claim.CodeAccepted)
			b.StopTimer()
			if errs+wrong > 0 {
				b.Fatalf("%d errors, %d answers other than accepted", errs, wrong)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
		})
	}
}

// The stampede after a sell-out: every claim sold_out, decided by claim.lua (the
// baseline) or short-circuited (one SET NX GET per claim, pipelined per batch).
func BenchmarkClaimerSoldOut(b *testing.B) {
	testenv.RequireBroker(b)
	for _, mode := range []struct {
		name  string
		short bool
	}{{"script", false}, {"short-circuit", true}} {
		b.Run(mode.name, func(b *testing.B) {
			e := newEnv(b)
			c := e.claimerWith(testenv.Brokers(), 10*time.Second, benchConfig(64, mode.short), nil)
			cmp := e.bigCampaign(0)
			// One claim.lua answer teaches the claimer the SKU is sold out.
			if _, wrong := drive(c, claims(cmp, "warm", 1), 1, claim.CodeSoldOut); wrong > 0 {
				b.Fatal("warm-up claim not sold out")
			}
			reqs := claims(cmp, "s", b.N)
			before := c.Stats()
			b.ReportAllocs()
			b.ResetTimer()
			errs, wrong := drive(c, reqs, 64, claim.CodeSoldOut)
			b.StopTimer()
			if errs+wrong > 0 {
				b.Fatalf("%d errors, %d answers other than sold_out", errs, wrong)
			}
			after := c.Stats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
			b.ReportMetric(float64(after.ShortCircuited-before.ShortCircuited)/float64(b.N), "short/op")
		})
	}
}

// mallocsPerClaim is the process's heap allocations per claim while reqs run: the
// claimer's own and its client libraries' (go-redis, franz-go), background goroutines
// included.
func mallocsPerClaim(c *claimer.Claimer, reqs []*claimer.Request, want int) (float64, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	errs, wrong := drive(c, reqs, 64, want)
	runtime.ReadMemStats(&after)
	if errs+wrong > 0 {
		return 0, fmt.Errorf("%d errors, %d answers other than %s", errs, wrong, reason(want))
	}
	return float64(after.Mallocs-before.Mallocs) / float64(len(reqs)), nil
}
