package settle

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/testenv"
)

var benchClaims = flag.Int("settle.claims", 20000, "BenchmarkSettlePath: claims settled per configuration")

// BenchmarkSettlePath measures the whole settle path of a poll against the real Redis
// and Postgres: confirm.lua per campaign, the Postgres transaction (claims + ledger),
// the outbox/inflight trim, for batch sizes, concurrent writers and write methods. Only
// the Kafka fetch and the offset commit are left out (the end-to-end drain benchmark in
// settler/ has them). Each configuration settles -settle.claims fresh claims decided by
// the real claim.lua, in polls of batch × writers claims as Run takes them, and
// reports claims/s; its claims are then deleted from Redis and Postgres.
//
//	go test -run '^$' -bench BenchmarkSettlePath -benchtime 1x ./settler/settle/
//
// The figures and the choice of defaults are in DESIGN.md (The settler).
func BenchmarkSettlePath(b *testing.B) {
	rdb, pg := testenv.Redis(b), testenv.PG(b)
	total := *benchClaims
	for _, m := range []writeMethod{writeUnnest, writeCopy} {
		for _, batch := range []int{500, 1000, 2000, 4000} {
			for _, writers := range []int{1, 2, 4, 8} {
				b.Run(fmt.Sprintf("%s/batch=%d/writers=%d", m, batch, writers), func(b *testing.B) {
					var elapsed time.Duration
					for i := 0; i < b.N; i++ {
						elapsed += settleOnce(b, rdb, pg, m, batch, writers, total)
					}
					b.ReportMetric(float64(total*b.N)/elapsed.Seconds(), "claims/s")
					b.ReportMetric(float64(elapsed.Nanoseconds())/float64(total*b.N), "ns/claim")
				})
			}
		}
	}
}

func settleOnce(b *testing.B, rdb *redis.Client, pg *pgxpool.Pool, m writeMethod, batch, writers, total int) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	c := testenv.NewCampaign(b, rdb, pg, total)
	defer c.Forget(b, pg) // first: it must run even if the setup below fails
	recs := c.Claim(b, total)
	c.MarkDurable(b, recs)
	cfg, err := Config{Brokers: []string{"127.0.0.1:1"}, Group: "bench", MaxBatch: batch, Writers: writers}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	s := &Settler{cfg: cfg, rdb: rdb, pg: pg, m: NewMetrics(nil), method: m,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	items := benchItems(recs)
	ctx := context.Background()

	b.StartTimer()
	start := time.Now()
	for poll := batch * writers; len(items) > 0; {
		k := min(poll, len(items))
		if _, err := s.settleItems(ctx, items[:k]); err != nil {
			b.Fatal(err)
		}
		items = items[k:]
	}
	elapsed := time.Since(start)
	b.StopTimer()

	if books := c.ReadBooks(b, pg); books.Claims != int64(total) || books.Reserves != int64(total) {
		b.Fatalf("settled %+v; want %d claims and reserves", books, total)
	}
	if ob, inf := c.Leftovers(b); ob != 0 || inf != 0 {
		b.Fatalf("outbox %d, inflight %d left after settling; want 0, 0", ob, inf)
	}
	return elapsed
}

// benchItems places the claims as a single-campaign sale lands them: one partition
// (the key is the campaign), consecutive offsets.
func benchItems(recs []claim.Record) []*item {
	slab := make([]item, len(recs))
	out := make([]*item, len(recs))
	for i := range recs {
		slab[i] = item{rec: recs[i], partition: 0, offset: int64(i)}
		out[i] = &slab[i]
	}
	return out
}
