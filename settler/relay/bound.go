package relay

import (
	"math"
	"time"
)

// EntryBytes is an upper estimate of the memory one outbox entry takes in Redis with
// ids at their 64-character maximum (a claim id of up to 91 characters, ten fields, the
// stream's listpack and radix-tree overhead): TestOutboxBound measures the real figure
// against it. Typical ids make entries about half as large.
const EntryBytes = 512

// Bound is how many entries a campaign's outbox can hold at peak, and why.
//
// An entry is added by claim.lua in the step that accepts a claim and removed either by
// void.lua (the claim is given back) or after the claim is a row in Postgres (by the
// settler's cleanup, or by this relay once it is older than MinAge). So at any moment
//
//	entries ≤ accepted claims not yet settled and cleaned up ≤ units accepted ≤ stock
//
// where stock is the campaign's total stock (plus any units expiry recycled): the hard
// ceiling, reached only if the settler is down for the whole sale. With the settler
// running, an entry lives for the settlement lag L (produce, fetch, one Postgres
// transaction, cleanup: well under a second on the dev stack), or - if the settler's
// cleanup missed it - until the relay's next pass after MinAge. At a peak accept rate R:
//
//	entries ≈ R × L                     (healthy)
//	entries ≤ R × (L + MinAge + Interval) (cleanup failing for a whole window)
//
// and never more than the stock. Entries voided by the gateway are removed at once and
// do not count. Memory is entries × EntryBytes: for example a 1,000,000-unit sale at a
// 50,000 claims/s peak with a 1 s lag holds about 50,000 entries (≈ 25 MB); with the
// settler stopped for the whole sale, 1,000,000 entries (≈ 500 MB) - which is why
// DESIGN.md sizes Redis for the stock of the campaigns running at once.
type Bound struct {
	Entries int64 `json:"entries"`
	Bytes   int64 `json:"bytes"`
	// Ceiling is true when the stock, not the rate, limits the outbox.
	Ceiling bool `json:"stock_limited"`
}

// OutboxBound computes Bound for a campaign of stock units accepted at rate claims per
// second with settlement lag lag, for the relay configured by cfg (zero fields take the
// defaults New would use). rate ≤ 0 means "unknown": the stock ceiling.
func OutboxBound(stock int64, rate float64, lag time.Duration, cfg Config) Bound {
	_ = cfg.validate() // fills defaults; a bad config only makes the estimate looser
	if stock < 0 {
		stock = 0
	}
	b := Bound{Entries: stock, Ceiling: true}
	if rate > 0 {
		window := lag + cfg.MinAge + cfg.Interval
		n := int64(math.Ceil(rate * window.Seconds()))
		if n < stock {
			b = Bound{Entries: n}
		}
	}
	b.Bytes = b.Entries * EntryBytes
	return b
}
