// Package loop runs the background jobs' passes (the outbox relay, Redis-loss recovery,
// voucher expiry, reconciliation, the events publisher, prize delivery): one pass at
// once, then one every interval, until the context ends. It is the one copy of that
// loop; each job keeps only its pass.
package loop

import (
	"context"
	"time"
)

// Every runs pass at once and then again interval after each pass ends, or at once when
// the pass says more is waiting (a full batch), until ctx ends; it returns nil then. A
// pass's error, unless ctx ended, goes to failed (which logs or counts it) and the next
// pass retries: a background job does not stop on a failed pass.
func Every(ctx context.Context, interval time.Duration, pass func(context.Context) (more bool, err error), failed func(error)) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		more, err := pass(ctx)
		if err != nil && ctx.Err() == nil && failed != nil {
			failed(err)
		}
		wait := interval
		if more && err == nil {
			wait = 0
		}
		t.Reset(wait)
	}
}
