// Package claimertest starts an in-process claimer for tests of the layers that a claim
// passes through (internal/risk, riskctl, the claimer's benchmarks). Tests only; it
// lives beside the claimer because the kit (internal/testenv, layer 1) may not import
// the gateway's tree. Everything else a test needs is in internal/testenv.
package claimertest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/testenv"
)

// New starts an in-process claimer on e's Redis and the dev broker whose decisions go
// to rec (nil: not recorded); it is closed when the test ends.
func New(e *testenv.Env, rec claimer.DecisionRecorder) *claimer.Claimer {
	e.T.Helper()
	testenv.RequireBroker(e.T)
	return NewOn(e, testenv.Brokers(), rec)
}

// NewOn is New producing to the given brokers (an in-process testenv.Kfake keeps a test
// of many claims off the dev broker).
func NewOn(e *testenv.Env, brokers []string, rec claimer.DecisionRecorder) *claimer.Claimer {
	e.T.Helper()
	kcl, err := kgo.NewClient(kafkaopt.Producer(brokers, time.Millisecond, 10*time.Second)...)
	if err != nil {
		e.T.Fatal(err)
	}
	cfg := claimer.Config{BatchWait: 100 * time.Microsecond}
	if rec != nil {
		cfg.Decisions = rec
	}
	c, err := claimer.New(cfg, e.RDB, kcl, nil, testenv.Quiet)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { c.Close(); kcl.Close() })
	return c
}

// Claim makes one claim with a fresh request id and returns its outcome; a transport
// error fails the test.
func Claim(t testing.TB, c *claimer.Claimer, campaign, user, device, ip string) claimer.Outcome {
	t.Helper()
	r := &claimer.Request{RequestID: testenv.ID(t, "rq"), CampaignID: campaign, SKU: "rp-50",
		UserID: user, DeviceID: device, IP: ip}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Do(ctx, r); err != nil {
		t.Fatalf("claim %s/%s/%s: %v", user, device, ip, err)
	}
	return r.Outcome
}
