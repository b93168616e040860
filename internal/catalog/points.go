package catalog

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// The points prices of a points_item campaign in Redis (rkeys.PointsPrices, the
// campaign's slot): the gateway's points step reads them with the campaign's route, and
// a campaign the gateway can route must never lack them, or its claims would be free.
// So they are written BEFORE warm.lua writes the meta (and recovery writes them before
// rebuild.lua): an AOF that loses a suffix of writes loses the meta with them.
//
// A price is frozen once the campaign starts (frozenChange), but warm.lua, which decides
// "started" by the Redis clock, runs after this write. A PUT that changes the kind or a
// price is therefore refused here when the stored campaign starts within
// pricesMargin (a clock skew far above the gateway's and Redis's): the prices of a
// campaign that may be taking claims are never rewritten.
const pricesMargin = 5 * time.Second

// pricesChange reports whether cp changes its stored kind or prices.
func pricesChange(prev *stored, cp *Campaign) string {
	if prev == nil {
		return ""
	}
	if prev.kind != cp.kind() {
		return "kind"
	}
	for i, s := range cp.SKUs {
		if pp := prev.skuPoints[s.SKU]; (pp == nil) != (s.Points == nil) || pp != nil && *pp != *s.Points {
			return "skus[" + strconv.Itoa(i) + "].points"
		}
	}
	return ""
}

// writePrices writes (points_item) or deletes (any other kind) the campaign's prices
// key, in one MULTI.
func (c *Catalog) writePrices(ctx context.Context, cp *Campaign, prev *stored) error {
	if f := pricesChange(prev, cp); f != "" && !prev.starts.After(c.now().Add(pricesMargin)) {
		return &StartedError{Field: f}
	}
	if cp.kind() != KindPointsItem && (prev == nil || prev.kind != KindPointsItem) {
		return nil // never a points campaign: nothing to write or delete
	}
	key := rkeys.PointsPrices(cp.ID)
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if cp.kind() == KindPointsItem {
			fields := []any{"kind", KindPointsItem}
			for _, s := range cp.SKUs {
				fields = append(fields, "s:"+s.SKU, *s.Points)
			}
			p.HSet(ctx, key, fields...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("warm campaign %s points prices: %w", cp.ID, err)
	}
	return nil
}
