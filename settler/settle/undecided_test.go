package settle_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/settle"
)

// A record read from Kafka while its idempotency record is still A (its gateway has the
// broker's ack but has not marked it D, so its client has not heard 200) is never
// written from A: the settler waits for the mark, writes the claim once it is D, and
// past VoidAfter voids it instead - what it took is given back and it is no row.
func TestUndecidedClaimWaitsForItsMarkThenIsVoided(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	c := testenv.NewCampaign(t, rdb, pg, 10)
	recs := c.Claim(t, 3)
	durable, late, never := recs[0], recs[1], recs[2]
	c.MarkDurable(t, []claim.Record{durable})

	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	testenv.Produce(t, testenv.Producer(t), topic, recs)
	r := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group, cfg: settle.Config{VoidAfter: 2 * time.Second}})
	r.waitMetric("flashgate_settler_records_consumed_total", 3, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	if ids := c.ClaimIDs(t, pg); len(ids) != 0 {
		t.Fatalf("rows %v while two claims of the batch are still A, want none yet (the batch waits)", ids)
	}
	c.MarkDurable(t, []claim.Record{late}) // its gateway's mark, late but inside VoidAfter

	b := waitRows(t, c, pg, 2)
	r.waitMetric("flashgate_settler_undecided_voided_total", 1, 30*time.Second)
	ids := c.ClaimIDs(t, pg)
	if !ids[durable.ClaimID] || !ids[late.ClaimID] || ids[never.ClaimID] || len(ids) != 2 {
		t.Fatalf("rows %v; want %s and %s, never %s", ids, durable.ClaimID, late.ClaimID, never.ClaimID)
	}
	if st := c.RequestState(t, never.RequestID); st != "V" {
		t.Fatalf("the claim never marked: state %q, want V (voided past VoidAfter)", st)
	}
	checkBooks(t, c, b, 2)
	if ob, inf := c.Leftovers(t); ob != 0 || inf != 0 {
		t.Fatalf("outbox %d, inflight %d; want 0, 0", ob, inf)
	}
}

// On a Redis that is not the run the campaign was stamped on (restored from an older
// copy, not rebuilt yet), a claim still A past VoidAfter may be the rolled-back copy of
// one marked D and answered 200: it is written (like a claim with no trace), not voided.
func TestUndecidedClaimOnARolledBackRedisIsWritten(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	c := testenv.NewCampaign(t, rdb, pg, 10)
	recs := c.Claim(t, 1)
	ctx := context.Background()
	meta := rkeys.Meta(c.ID)
	stamp := rdb.HGet(ctx, meta, rkeys.FieldRunID).Val()
	if stamp == "" {
		t.Fatal("the warmed campaign carries no run id stamp")
	}
	if err := rdb.HSet(ctx, meta, rkeys.FieldRunID, "0000000000000000000000000000000000000000").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.HSet(context.Background(), meta, rkeys.FieldRunID, stamp) })

	topic, group := testenv.NewTopic(t), testenv.ID(t, "settler-test")
	testenv.Produce(t, testenv.Producer(t), topic, recs)
	r := startSettler(t, deps{rdb: rdb, pg: pg, topic: topic, group: group, cfg: settle.Config{VoidAfter: time.Second}})
	b := waitRows(t, c, pg, 1)
	if err := rdb.HSet(ctx, meta, rkeys.FieldRunID, stamp).Err(); err != nil {
		t.Fatal(err)
	}
	if ids := c.ClaimIDs(t, pg); !ids[recs[0].ClaimID] {
		t.Fatalf("rows %v, want %s", ids, recs[0].ClaimID)
	}
	if st := c.RequestState(t, recs[0].RequestID); st != "S" {
		t.Fatalf("state %q, want S (written, not voided)", st)
	}
	if got := r.metric("flashgate_settler_undecided_voided_total"); got != 0 {
		t.Fatalf("voided %v claims on the rolled-back Redis, want 0", got)
	}
	checkBooks(t, c, b, 1)
}
