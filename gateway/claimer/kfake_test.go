package claimer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestBrokerRefusesProduceVoids: a broker that is up but refuses every produce (an
// in-process kfake cluster answering INVALID_RECORD, a non-retriable error) makes the
// claimer answer 503 (ErrUnavailable) at once, well inside its delivery timeout, and
// void.lua gives back everything the claims took. When the broker takes produces again,
// the same request_id is decided anew and accepted, and its record is on the broker.
func TestBrokerRefusesProduceVoids(t *testing.T) {
	e := newEnv(t)
	k := testenv.NewKfake(t)
	cmp := e.campaign("", campaignSpec{start: -time.Minute})
	c := e.claimerOn(k.Brokers(), 20*time.Second)
	before := e.snapshot(cmp)

	refuse := k.FailProduce(kerr.InvalidRecord.Code)
	start := time.Now()
	for i := range 3 {
		r := req(cmp, "rp-50", fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i))
		if err := e.do(c, r); !errors.Is(err, claimer.ErrUnavailable) {
			t.Fatalf("claim %d while the broker refuses produces: %s err %v; want ErrUnavailable (503)", i, reason(r.Code), err)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("three refused claims took %s: a non-retriable refusal should fail fast, not wait out the 20s delivery timeout", took)
	}
	if refuse.Hits() == 0 {
		t.Fatal("the broker answered no produce with the fault: it did not bite")
	}
	if after := e.snapshot(cmp); after != before {
		t.Fatalf("refused produces left state behind:\nbefore %s\nafter  %s", before, after)
	}
	if rec := e.rdb.Get(context.Background(), rkeys.Request(cmp, "r0")).Val(); len(rec) == 0 || rec[0] != 'V' {
		t.Errorf("idempotency record after the refusal: %q, want state V", rec)
	}

	refuse.Clear()
	r := req(cmp, "rp-50", "u0", "r0")
	if err := e.do(c, r); err != nil || r.Code != claim.CodeAccepted || r.Replayed {
		t.Fatalf("retry once the broker takes produces: %s replayed=%v err %v; want a fresh accept", reason(r.Code), r.Replayed, err)
	}
	if stock := e.rdb.HGet(context.Background(), rkeys.SKU(cmp, "rp-50"), "stock").Val(); stock != "2" {
		t.Errorf("stock %s, want 2", stock)
	}
	if !onBroker(t, k.Brokers(), r.ClaimID) {
		t.Errorf("accepted claim %s is not on the broker's %s", r.ClaimID, kafkaopt.ClaimsTopic)
	}
}

// onBroker reports whether a flash.claims record of brokers carries claimID.
func onBroker(t *testing.T, brokers []string, claimID string) bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(kafkaopt.ClaimsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		found := false
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if rec, err := claim.Decode(r.Value); err == nil && rec.ClaimID == claimID {
				found = true
			}
		})
		if found {
			return true
		}
	}
	return false
}

// One hot campaign spreads over every partition of flash.claims (issue 15): the record
// key is the claim id (kafkaopt.ClaimKey), so the settlers of one group share a flash
// sale instead of one of them settling it through one partition. Each record carries its
// own claim id as key, which the relay's republish uses too.
func TestOneCampaignSpreadsOverEveryPartition(t *testing.T) {
	e := newEnv(t)
	k := testenv.NewKfake(t)
	cmp := e.campaign("", campaignSpec{start: -time.Minute, limit: 1, skus: `[{"sku":"rp-50","stock":64,"value":50}]`})
	c := e.claimerOn(k.Brokers(), 20*time.Second)
	const n = 64
	ids := map[string]bool{}
	for i := range n {
		r := req(cmp, "rp-50", fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i))
		if err := e.do(c, r); err != nil || r.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: %s %v", i, reason(r.Code), err)
		}
		ids[r.ClaimID] = true
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.ConsumeTopics(kafkaopt.ClaimsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	perPartition := map[int32]int{}
	seen := 0
	for seen < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			rec, err := claim.Decode(r.Value)
			if err != nil || !ids[rec.ClaimID] {
				return
			}
			if string(r.Key) != rec.ClaimID {
				t.Errorf("record of %s keyed %q; want its claim id", rec.ClaimID, r.Key)
			}
			perPartition[r.Partition]++
			seen++
		})
	}
	if seen != n {
		t.Fatalf("%d of %d records read back", seen, n)
	}
	// 64 random claim ids over 4 partitions: all on fewer than 4 is a chance of about
	// 4 * (3/4)^64 = 4e-8.
	if len(perPartition) != 4 {
		t.Fatalf("one campaign's %d records landed in partitions %v; want all 4", n, perPartition)
	}
	t.Logf("records per partition: %v", perPartition)
}
