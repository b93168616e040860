package testenv

// What the risk layer's tests share (internal/risk, riskctl; was internal/risk/risktest):
// setting rules directly in Redis and keeping the claimer's decisions for inspection.
// The in-process claimer itself is gateway/claimer/claimertest (a layer above this kit).

import (
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/risk"
)

// SetRules writes rule settings ("device.max=3", "device.window=1m") at a level: the
// campaign's, or the global one when campaign is "" (tests should not: the dev stack is
// shared). It bypasses riskctl's audit: for tests of the claim script.
func (e *Env) SetRules(campaign string, settings ...string) {
	e.T.Helper()
	as, err := risk.ParseAssignments(settings)
	if err != nil {
		e.T.Fatal(err)
	}
	ctx := Ctx(e.T, 5*time.Second)
	old, err := risk.ReadRules(ctx, e.RDB, campaign)
	if err != nil {
		e.T.Fatal(err)
	}
	if _, err := e.RDB.TxPipelined(ctx, func(p redis.Pipeliner) error {
		risk.WriteRules(ctx, p, campaign, old, old.Apply(as))
		return nil
	}); err != nil {
		e.T.Fatal(err)
	}
}

// Recorder keeps every decision it is given, in order. It is the claimer's own
// interface, implemented in memory: the decisions are the real ones the script made.
type Recorder struct {
	mu sync.Mutex
	ds []risk.Decision
}

// Record copies d (its strings view request memory).
func (r *Recorder) Record(d *risk.Decision) {
	c := *d
	c.CampaignID, c.SKU, c.UserID = clone(c.CampaignID), clone(c.SKU), clone(c.UserID)
	c.DeviceID, c.IP, c.RequestID, c.ClaimID = clone(c.DeviceID), clone(c.IP), clone(c.RequestID), clone(c.ClaimID)
	r.mu.Lock()
	r.ds = append(r.ds, c)
	r.mu.Unlock()
}

func clone(s string) string { return string([]byte(s)) }

// Decisions returns the decisions of a campaign so far.
func (r *Recorder) Decisions(campaign string) []risk.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []risk.Decision
	for _, d := range r.ds {
		if d.CampaignID == campaign {
			out = append(out, d)
		}
	}
	return out
}
