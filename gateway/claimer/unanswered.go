package claimer

import (
	"context"
	"strings"
	"time"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// unanswered is a claim whose client is answered 503 while it may be accepted (A) in
// Redis: what void.lua needs, copied (the request's strings are the caller's and Do
// returns at once).
type unanswered struct {
	keys                     []string
	claimID, userID, channel string
}

func (c *Claimer) unansweredOf(p *pending) unanswered {
	r, rt := p.req, p.rt
	return unanswered{
		keys: []string{rt.meta, rt.skuKey(r.SKU), p.reqKey, rt.users, rt.blKey, rt.outbox, rt.inflight,
			rkeys.PartnerQuotas(r.CampaignID), rt.pushes, rt.poolKey(r.SKU)},
		claimID: strings.Clone(p.claimID), userID: strings.Clone(r.UserID), channel: strings.Clone(r.Channel),
	}
}

// revoidFor bounds how long the background void keeps trying: well inside the
// settler's VoidAfter and the relay's MinAge (15 s each by default), so the claim is V
// before either of them meets it as A - the settler would then have to guess (it
// writes an A of a campaign whose Redis run changed: DESIGN.md "What is durable when").
const revoidFor = 10 * time.Second

// voidUnanswered gives back, in the background, whatever the failed script call may
// have accepted for items: void.lua only acts on a record that is this claim's and still
// A, so a claim the script never accepted is left alone (VoidGone). If the script call
// is still queued in Redis behind a stall, the void may run first and find nothing; the
// claim is then left A, never produced, and the outbox relay voids it past MinAge.
func (c *Claimer) voidUnanswered(items []*pending) {
	us := make([]unanswered, 0, len(items))
	for _, p := range items {
		us = append(us, c.unansweredOf(p))
	}
	if len(us) == 0 {
		return
	}
	// Give the timed-out call a moment to run first if it is only slow, so the void
	// finds what it accepted.
	go c.revoid(us, c.cfg.RedisTimeout/4)
}

// revoid voids each claim of us (after first), retrying while Redis does not answer
// (it is restarting, or unreachable) for up to revoidFor. A claim answered 503 whose
// own void failed is given back as soon as Redis is back, not only at the relay's or
// the settler's deadline. A void that finds the claim D (its mark ran, its answer was
// lost) leaves it: it will be a row, and a retry of the request_id gets it.
func (c *Claimer) revoid(us []unanswered, first time.Duration) {
	deadline := time.Now().Add(revoidFor)
	wait := first
	for len(us) > 0 {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.quit:
				t.Stop()
				return
			}
		}
		rest := us[:0]
		for _, u := range us {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
			res, err := scripts.Void.Run(ctx, c.rdb, u.keys, u.claimID, u.userID, u.channel).Int()
			cancel()
			if err != nil {
				rest = append(rest, u)
				continue
			}
			c.metrics.voids[res].Inc()
		}
		us = rest
		if len(us) > 0 && time.Now().After(deadline) {
			c.metrics.voids[voidFailed].Add(float64(len(us)))
			c.log.Warn("claims answered 503 could not be voided: Redis did not answer; the relay or the settler voids them at their deadline",
				"claims", len(us))
			return
		}
		wait = 200 * time.Millisecond
	}
}
