package claimer_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Points-item claims beside BenchmarkClaimerAccepted: the same claimer, batch 64, 64
// claims in flight, plus the points step of each claim (the holds-index HSET in the
// campaign's slot, the reserve script in the user's slot; the settler's spend is not on
// the claim path). 256 users with points for every claim, 1,000,000 claims each allowed.
//
//	go test -run '^$' -bench 'Claimer(Accepted|PointsItem)' -benchtime 20000x ./gateway/claimer/
func BenchmarkClaimerPointsItem(b *testing.B) {
	testenv.RequireBroker(b)
	e := newEnv(b)
	ctx := context.Background()
	svc, err := points.New(testenv.PG(b), e.rdb, points.Config{DailyCap: points.MaxAmount})
	if err != nil {
		b.Fatal(err)
	}
	task := testenv.ID(b, "task")
	res, err := svc.PutTask(ctx, task, &points.TaskPut{Name: "bench", PerGrantMax: points.MaxAmount,
		PerUserDailyMax: points.MaxAmount, Lifetime: "1h"})
	if err != nil {
		b.Fatal(err)
	}
	const users = 256
	prefix := testenv.ID(b, "pb")
	for i := range users {
		u := prefix + "-" + strconv.Itoa(i)
		if _, err := svc.Grant(ctx, []byte(res.Key), &points.GrantReq{UserID: u, Task: task, Amount: points.MaxAmount, GrantID: u}); err != nil {
			b.Fatal(err)
		}
	}
	cmp := testenv.New(b).Campaign(testenv.Spec{Kind: "points_item", Points: 1, PerUser: 1_000_000, BLBudget: 1 << 50,
		Budget: 1 << 50, End: 15 * time.Minute, SKUs: []testenv.SKU{{SKU: "rp-1", Stock: 1_000_000_000, Value: 1}}}).ID
	cfg := benchConfig(64, true)
	cfg.Points = svc
	c := e.claimerWith(testenv.Brokers(), 10*time.Second, cfg, nil)
	reqs := claims(cmp, "p", b.N)
	for i, r := range reqs {
		r.UserID = prefix + "-" + strconv.Itoa(i%users)
	}
	b.ReportAllocs()
	b.ResetTimer()
	errs, wrong := drive(c, reqs, 64, claim.CodeAccepted)
	b.StopTimer()
	if errs+wrong > 0 {
		b.Fatalf("%d errors, %d answers other than accepted", errs, wrong)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	var _ claimer.PointsHolder = svc
}
