package recovery

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// pointsPrices is a points_item campaign's prices as the books say (nil map: another
// kind). The catalog writes the same key before warm.lua (internal/catalog points.go);
// recovery writes it before rebuild.lua unfences the campaign, so a campaign the
// gateway can route always has its prices.
type pointsPrices map[string]int64

func readPointsPrices(ctx context.Context, tx pgx.Tx, campaign string) (pointsPrices, error) {
	var kind string
	if err := tx.QueryRow(ctx, `SELECT kind FROM campaigns WHERE id = $1`, campaign).Scan(&kind); err != nil {
		return nil, err
	}
	if kind != "points_item" {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `SELECT sku, points FROM campaign_skus WHERE campaign_id = $1 AND points IS NOT NULL`, campaign)
	if err != nil {
		return nil, err
	}
	p := pointsPrices{}
	for rows.Next() {
		var sku string
		var pts int64
		if err := rows.Scan(&sku, &pts); err != nil {
			return nil, err
		}
		p[sku] = pts
	}
	return p, rows.Err()
}

func writePointsPrices(ctx context.Context, rdb *redis.Client, campaign string, p pointsPrices) error {
	if p == nil {
		return nil
	}
	key := rkeys.PointsPrices(campaign)
	_, err := rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Del(ctx, key)
		fields := []any{"kind", "points_item"}
		for sku, pts := range p {
			fields = append(fields, "s:"+sku, pts)
		}
		pipe.HSet(ctx, key, fields...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild points prices: %w", err)
	}
	return nil
}
