package vouchers

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// Blocks answers whether a user is blocked (riskctl block user) or frozen (the freeze
// rule, or riskctl), for redeem: a user the risk team stopped does not cash vouchers
// in either. Both keys carry the {risk} tag: one EXISTS on one slot.
type Blocks struct {
	rdb *redis.Client
}

// NewBlocks builds the check on the gateway's Redis client.
func NewBlocks(rdb *redis.Client) (*Blocks, error) {
	if rdb == nil {
		return nil, errors.New("vouchers: a Redis client is required")
	}
	return &Blocks{rdb: rdb}, nil
}

// Blocked reports whether userID is blocked or frozen now.
func (b *Blocks) Blocked(ctx context.Context, userID string) (bool, error) {
	n, err := b.rdb.Exists(ctx, rkeys.Block(rkeys.KindUser, userID), rkeys.Freeze(rkeys.KindUser, userID)).Result()
	return n > 0, err
}
