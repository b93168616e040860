package settle

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/flashgate/flashgate/internal/testenv"
)

// BenchmarkValidate measures the input checks of one poll of 1000 claims with the
// catalog cache warm (the steady state of a sale: no query), per poll; ns/op ÷ 1000 is
// the cost per record. Measure on a quiet machine:
//
//	go test -run '^$' -bench BenchmarkValidate -benchmem ./settler/settle/
func BenchmarkValidate(b *testing.B) {
	rdb, pg := testenv.Redis(b), testenv.PG(b)
	c := testenv.NewCampaign(b, rdb, pg, 1000)
	recs := c.Claim(b, 1000)
	cfg, err := Config{Brokers: []string{"127.0.0.1:1"}, Group: "g"}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	s := &Settler{cfg: cfg, pg: pg, m: NewMetrics(nil), log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		cat: newCatalogCache(pg, catalogTTL, catalogMax)}
	items := benchItems(recs)
	ctx := context.Background()
	if keep, bad, err := s.validate(ctx, items); err != nil || len(bad) != 0 || len(keep) != len(items) {
		b.Fatalf("warm-up: %d kept, %d set aside, %v", len(keep), len(bad), err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, bad, err := s.validate(ctx, items); err != nil || len(bad) != 0 {
			b.Fatal(len(bad), err)
		}
	}
}
