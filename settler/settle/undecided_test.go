package settle_test

import (
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/internal/fixture"
	"github.com/flashgate/flashgate/settler/settle"
)

// A record read from Kafka while its idempotency record is still A (its gateway has the
// broker's ack but has not marked it D, so its client has not heard 200) is never
// written from A: the settler waits for the mark, writes the claim once it is D, and
// past VoidAfter voids it instead - what it took is given back and it is no row.
func TestUndecidedClaimWaitsForItsMarkThenIsVoided(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	c := fixture.NewCampaign(t, rdb, pg, 10)
	recs := c.Claim(t, 3)
	durable, late, never := recs[0], recs[1], recs[2]
	c.MarkDurable(t, []claim.Record{durable})

	topic, group := fixture.NewTopic(t), testenv.ID(t, "settler-test")
	fixture.Produce(t, fixture.Producer(t), topic, recs)
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
