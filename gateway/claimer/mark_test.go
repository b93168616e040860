package claimer_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

// The 200 waits for the durable mark: a claim the broker acknowledged but that is voided
// before its gateway could mark it D (here by the test, as the relay or the settler do
// past their deadline, while the mark waits out a 1 s MarkLinger) is answered 503, and
// what it took stays given back - the client never holds a 200 for a claim that is then
// not a row.
func TestClaimVoidedBeforeItsMarkIsAnswered503(t *testing.T) {
	e := newEnv(t)
	testenv.RequireBroker(t)
	c := e.claimerWith(testenv.NewKfake(t).Brokers(), 10*time.Second, claimer.Config{MarkLinger: time.Second}, nil)
	cmp := e.campaign("", campaignSpec{start: -time.Minute})
	ctx := context.Background()
	// Out of the shared stack's relays' sight (they find campaigns through this set).
	if err := e.rdb.SRem(ctx, rkeys.Campaigns, cmp).Err(); err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(cmp)
	r := req(cmp, "rp-50", "u1", "r-mark")
	done := make(chan error, 1)
	go func() { done <- e.do(c, r) }()

	var rec string
	testenv.Eventually(t, 5*time.Second, "the claim is accepted (record A)", func() bool {
		rec = e.rdb.Get(ctx, rkeys.Request(cmp, "r-mark")).Val()
		return strings.HasPrefix(rec, "A\t")
	})
	time.Sleep(300 * time.Millisecond) // acknowledged by now; its mark waits out the linger
	claimID := strings.Split(rec, "\t")[1]
	res, err := scripts.Void.Run(ctx, e.rdb, []string{rkeys.Meta(cmp), rkeys.SKU(cmp, "rp-50"), rkeys.Request(cmp, "r-mark"),
		rkeys.Users(cmp), rkeys.BusinessLine(e.rdb.HGet(ctx, rkeys.Meta(cmp), "bl").Val()), rkeys.Outbox(cmp), rkeys.Inflight(cmp)}, claimID, "u1").Int()
	if err != nil || res != scripts.VoidDone {
		t.Fatalf("void before the mark: %d %v", res, err)
	}
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the claim was never answered")
	}
	if !errors.Is(err, claimer.ErrUnavailable) {
		t.Fatalf("claim voided before its mark: %s err %v; want ErrUnavailable (503)", reason(r.Code), err)
	}
	if got := e.rdb.Get(ctx, rkeys.Request(cmp, "r-mark")).Val(); !strings.HasPrefix(got, "V\t") {
		t.Fatalf("record %q, want V (the mark must not turn a voided claim durable)", got)
	}
	if after := e.snapshot(cmp); after != before {
		t.Fatalf("a 503 took something:\nbefore %s\nafter  %s", before, after)
	}
}
