package vouchers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/voucher"
)

// PendingScan finds a user's accepted claims that the settler has not written yet, for
// GET /v1/me/claims. Redis keeps no per-user list of claim ids (the claim script would
// pay for one on every claim), so it reads what exists: the campaigns in which the user
// has accepted claims (the per-user counts, one pipelined HGET per warmed campaign), then
// those campaigns' in-flight hashes, which hold only the claims between acceptance and
// settlement - normally a handful, since the settler keeps up within milliseconds.
//
// Bounded: a campaign whose in-flight hash holds more than MaxInflight entries (the
// settler is far behind) is skipped, so a backlog cannot make this call expensive; its
// pending claims appear once they settle.
type PendingScan struct {
	rdb     *redis.Client
	pending Pending
	// MaxInflight is the largest in-flight hash read (default 2048).
	MaxInflight int64
}

// Pending answers for claims accepted but not yet in Postgres: the claimer's lookup
// (api.Pending is the same; declared here too so this adapter does not import the
// HTTP package).
type Pending interface {
	Pending(ctx context.Context, claimID string) (claimer.Outcome, claimer.Request, bool, error)
}

// NewPendingScan builds the scan on the gateway's Redis client and the claimer's
// Pending lookup.
func NewPendingScan(rdb *redis.Client, p Pending) (*PendingScan, error) {
	if rdb == nil || p == nil {
		return nil, errors.New("vouchers: a Redis client and a Pending lookup are required")
	}
	return &PendingScan{rdb: rdb, pending: p, MaxInflight: 2048}, nil
}

// PendingOf lists userID's pending claims (unordered).
func (p *PendingScan) PendingOf(ctx context.Context, userID string) ([]voucher.Voucher, error) {
	camps, err := p.rdb.SMembers(ctx, rkeys.Campaigns).Result()
	if err != nil {
		return nil, fmt.Errorf("pending of a user: campaigns: %w", err)
	}
	if len(camps) == 0 {
		return nil, nil
	}
	pipe := p.rdb.Pipeline()
	counts := make([]*redis.StringCmd, len(camps))
	lens := make([]*redis.IntCmd, len(camps))
	for i, c := range camps {
		counts[i] = pipe.HGet(ctx, rkeys.Users(c), userID)
		lens[i] = pipe.HLen(ctx, rkeys.Inflight(c))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("pending of a user: counts: %w", err)
	}
	var out []voucher.Voucher
	for i, c := range camps {
		if n, _ := counts[i].Int64(); n <= 0 || lens[i].Val() == 0 || lens[i].Val() > p.MaxInflight {
			continue
		}
		ids, err := p.rdb.HKeys(ctx, rkeys.Inflight(c)).Result()
		if err != nil {
			return nil, fmt.Errorf("pending of a user: in flight: %w", err)
		}
		for _, id := range ids {
			o, r, ok, err := p.pending.Pending(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("pending of a user: %w", err)
			}
			if !ok || r.UserID != userID {
				continue
			}
			out = append(out, voucher.Voucher{ClaimID: id, CampaignID: r.CampaignID, SKU: r.SKU, UserID: r.UserID,
				State: "pending", Value: o.Value, ClaimedAt: time.UnixMilli(o.ClaimedAtMs).UTC(),
				ExpiresAt: time.UnixMilli(o.ExpiresAtMs).UTC()})
		}
	}
	return out, nil
}
