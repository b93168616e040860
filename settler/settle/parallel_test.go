package settle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/testenv"
)

func TestSplitEvenBatches(t *testing.T) {
	mk := func(n int) []*item {
		out := make([]*item, n)
		for i := range out {
			out[i] = &item{offset: int64(i)}
		}
		return out
	}
	for _, tt := range []struct {
		n, max int
		want   []int
	}{
		{0, 500, nil},
		{1, 500, []int{1}},
		{500, 500, []int{500}},
		{501, 500, []int{251, 250}},
		{1001, 500, []int{334, 334, 333}},
		{2000, 500, []int{500, 500, 500, 500}},
	} {
		items := mk(tt.n)
		got := split(items, tt.max)
		var sizes []int
		next := int64(0)
		for _, c := range got {
			sizes = append(sizes, len(c))
			for _, it := range c {
				if it.offset != next {
					t.Fatalf("split(%d, %d): offset %d where %d was due: batches must keep the order", tt.n, tt.max, it.offset, next)
				}
				next++
			}
		}
		if len(sizes) != len(tt.want) || (len(sizes) > 0 && !equal(sizes, tt.want)) {
			t.Fatalf("split(%d, %d) = %v, want %v", tt.n, tt.max, sizes, tt.want)
		}
	}
}

func equal(a, b []int) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

// TestOneFailingBatchFailsThePoll settles a poll as four concurrent batches, one of
// which Postgres fails on every attempt with an error that is not a data or
// constraint refusal (a request_id too large for its unique index, SQLSTATE 54000: such a
// failure is retried, never blamed on the record; a record like it never gets here,
// validate refuses ids over 64 characters): the other three commit, the poll reports
// an error (so Run would not commit its offsets), and the whole poll settled again
// once the bad claim is fixed writes every claim exactly once, the three committed
// batches as duplicates. (A refusal for good - class 22/23 - is set aside instead:
// TestRefusedClaimIsSetAsideFromItsBatch.)
func TestOneFailingBatchFailsThePoll(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	const n = 200
	c, recs := testenv.DurableCampaign(t, rdb, pg, n)
	s := fourWriters(t, rdb, pg)
	items := benchItems(recs)
	bad := items[120] // in the third batch (100..149)
	good := bad.rec.RequestID
	huge := make([]byte, 4000)
	rand.Read(huge)
	bad.rec.RequestID = hex.EncodeToString(huge) // 8000 random characters: over the btree row limit

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.settleItems(ctx, items); err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("settleItems with an unwritable batch: %v; want an error when the time runs out", err)
	}
	if s.retrying.Load() != 0 {
		t.Fatalf("retrying = %d after the poll gave up, want 0", s.retrying.Load())
	}
	ids := c.ClaimIDs(t, pg)
	for i, it := range items {
		if in := ids[it.rec.ClaimID]; in != (i < 100 || i >= 150) {
			t.Fatalf("claim %d written: %v; want only the three good batches written", i, in)
		}
	}

	bad.rec.RequestID = good
	if _, err := s.settleItems(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	b := c.ReadBooks(t, pg)
	want := testenv.Books{Claims: n, DistinctRequests: n, ClaimValue: n * c.Value, Reserves: n, ReserveAmount: n * c.Value}
	if b != want {
		t.Fatalf("books after the poll is settled again: %+v, want %+v", b, want)
	}
	if ob, inf := c.Leftovers(t); ob != 0 || inf != 0 {
		t.Fatalf("outbox %d, inflight %d; want 0, 0", ob, inf)
	}
}

// TestRefusedClaimIsSetAsideFromItsBatch: the same poll of four concurrent batches,
// one claim of which Postgres refuses for good (a value its CHECK rejects, SQLSTATE
// 23514). The poll settles without error within the bounded tries: that claim alone
// is marked refused (to be set aside) and every other claim, its batch's included, is
// written exactly once.
func TestRefusedClaimIsSetAsideFromItsBatch(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	const n = 200
	c, recs := testenv.DurableCampaign(t, rdb, pg, n)
	s := fourWriters(t, rdb, pg)
	items := benchItems(recs)
	bad := items[120]
	bad.rec.Value = -1
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.settleItems(ctx, items); err != nil {
		t.Fatalf("settleItems with a refused claim: %v; want it set aside and the rest written", err)
	}
	if s.retrying.Load() != 0 {
		t.Fatalf("retrying = %d after the poll settled, want 0", s.retrying.Load())
	}
	ids := c.ClaimIDs(t, pg)
	for i, it := range items {
		if in := ids[it.rec.ClaimID]; in != (i != 120) {
			t.Fatalf("claim %d written: %v; want all but the refused one", i, in)
		}
		if refused := it.refused != nil; refused != (i == 120) {
			t.Fatalf("claim %d refused: %v (%v); want only claim 120", i, refused, it.refused)
		}
	}
	if !permanent(bad.refused) {
		t.Fatalf("refusal %v is not classed permanent", bad.refused)
	}
}

// fourWriters is a settler of four writers of 50-claim batches that retries fast, for
// driving its poll directly (no broker).
func fourWriters(t *testing.T, rdb *redis.Client, pg *pgxpool.Pool) *Settler {
	t.Helper()
	cfg, err := Config{Brokers: []string{"127.0.0.1:1"}, Group: "g", MaxBatch: 50, Writers: 4,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return &Settler{cfg: cfg, rdb: rdb, pg: pg, m: NewMetrics(nil), method: writeChosen,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}
