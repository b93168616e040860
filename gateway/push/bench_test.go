package push_test

import (
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/push"
	"github.com/flashgate/flashgate/internal/testenv"
)

// BenchmarkPushUsers times one push of 100,000 users over 2 tiers from the hold to done
// (claim.lua, produce, durable marks, progress writes) and reports users/s. Run it on a
// quiet machine against a private Postgres:
//
//	FLASH_PG_URL=postgres://flashgate:flashgate@127.0.0.1:<port>/flashgate?sslmode=disable \
//	  go test -run XXX -bench PushUsers -benchtime 1x ./gateway/push/
func BenchmarkPushUsers(b *testing.B) {
	const perTier = 50_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := testenv.New(b)
		c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "t1", Stock: perTier, Value: 10}, {SKU: "t2", Stock: perTier, Value: 20}}})
		s1 := benchSegment(b, e, perTier)
		s2 := benchSegment(b, e, perTier)
		svc, err := push.New(push.Config{}, e.PG, e.RDB, testenv.Producer(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx := testenv.Ctx(b, 10*time.Minute)
		b.StartTimer()
		start := time.Now()
		if _, _, err := svc.Put(ctx, c.ID, "bench", &push.Body{Tiers: map[string]string{s1: "t1", s2: "t2"}}, "bench"); err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := svc.RunOnce(ctx); err != nil {
				b.Fatal(err)
			}
			p, _ := svc.Get(ctx, c.ID, "bench")
			if p.State == push.StateDone {
				if p.Users.Issued != 2*perTier {
					b.Fatalf("issued %d", p.Users.Issued)
				}
				break
			}
		}
		b.ReportMetric(float64(2*perTier)/time.Since(start).Seconds(), "users/s")
	}
}
