package recovery

import (
	"context"
	"time"
)

// Kick asks a Recoverer running RunWithKicks for a detection pass now rather than at
// its next Interval. The gateway kicks when claim.lua answers NOT_WARM: the campaign's
// run id stamp is not this Redis's (restarted, restored from an older AOF copy, failed
// over to a replica), so recovery should start at once. Safe for concurrent use; kicks
// that arrive while one is pending are merged.
type Kick struct{ ch chan struct{} }

// NewKick returns a Kick for RunWithKicks.
func NewKick() *Kick { return &Kick{ch: make(chan struct{}, 1)} }

// Now requests a pass. It never blocks (it is called on the claim path).
func (k *Kick) Now() {
	select {
	case k.ch <- struct{}{}:
	default:
	}
}

// kickGap is the least time between two passes started by kicks: while a business line
// is fenced every claim answers NOT_WARM and kicks, and one pass per gap is plenty.
const kickGap = 100 * time.Millisecond

// RunWithKicks is Run, plus a pass soon after each kick (at most one per kickGap).
func (r *Recoverer) RunWithKicks(ctx context.Context, k *Kick) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	var last time.Time
	for {
		if _, err := r.Once(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("redis recovery pass failed", "err", err)
		}
		last = time.Now()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-k.ch:
			if wait := kickGap - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(wait):
				}
			}
		}
	}
}
