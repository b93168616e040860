package claimer

import (
	"context"
	"strings"
	"time"

	"github.com/flashgate/flashgate/scripts"
)

// unanswered is a claim whose script call failed after it may have been accepted: what
// void.lua needs, copied (the request's strings are the caller's and Do returns at once).
type unanswered struct {
	keys            []string
	claimID, userID string
}

// voidUnanswered gives back, in the background, whatever the failed script call may
// have accepted for items: void.lua only acts on a record that is this claim's and still
// A, so a claim the script never accepted is left alone (VoidGone). If the script call
// is still queued in Redis behind a stall, the void may run first and find nothing; the
// claim is then left A, never produced, and the outbox relay voids it past MinAge.
func (c *Claimer) voidUnanswered(items []*pending) {
	us := make([]unanswered, 0, len(items))
	for _, p := range items {
		r, rt := p.req, p.rt
		us = append(us, unanswered{
			keys:    []string{rt.meta, rt.skuKey(r.SKU), p.reqKey, rt.users, rt.blKey, rt.outbox, rt.inflight},
			claimID: p.claimID, userID: strings.Clone(r.UserID),
		})
	}
	if len(us) == 0 {
		return
	}
	go func() {
		// Give the timed-out call a moment to run first if it is only slow, so the void
		// finds what it accepted; then one attempt per claim, each bounded.
		time.Sleep(c.cfg.RedisTimeout / 4)
		for _, u := range us {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
			res, err := scripts.Void.Run(ctx, c.rdb, u.keys, u.claimID, u.userID).Int()
			cancel()
			if err != nil {
				c.metrics.voids[voidFailed].Inc()
				return // Redis is still away: the relay's deadline covers the rest
			}
			c.metrics.voids[res].Inc()
		}
	}()
}
