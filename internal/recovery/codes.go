package recovery

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// rebuildPools writes a campaign's partner code pools back from the books (DESIGN.md
// "Partner code pools"): for every SKU with imported codes (sku_codes), the set of every
// code is the codes imported, and the pool is the codes imported minus the codes of
// claim rows (claims.partner_code, in the snapshot tx) minus the codes of claims in
// flight (the outbox entries read before the snapshot: a claim can become a row only
// from there while the business line is fenced). The SKU's pool flag is set, so
// claim.lua hands a code out again, or sold_out when none is left.
//
// It runs fenced (no claim pops a code) and before rebuild.lua lifts the fence. A void
// can still run meanwhile (the relay, a gateway's failed produce): one that ran before
// the pool was rewritten is seen afterwards in its idempotency record (V) and its code
// is put back here; one that runs after puts its code back itself (void.lua). A code is
// therefore never in the pool while a claim that is or may become a row holds it. It
// returns how many codes are in the pools.
func (r *Recoverer) rebuildPools(ctx context.Context, tx pgx.Tx, campaign string, outbox []inFlight) (int64, error) {
	rows, err := tx.Query(ctx, `SELECT DISTINCT sku FROM sku_codes WHERE campaign_id = $1`, campaign)
	if err != nil {
		return 0, err
	}
	skus, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	if len(skus) == 0 {
		return 0, nil
	}
	held := map[string]map[string]bool{}
	var coded []inFlight
	for _, f := range outbox {
		if f.code == "" {
			continue
		}
		if held[f.sku] == nil {
			held[f.sku] = map[string]bool{}
		}
		held[f.sku][f.code] = true
		coded = append(coded, f)
	}
	var total int64
	for _, sku := range skus {
		pool, all := rkeys.CodePool(campaign, sku), rkeys.CodesAll(campaign, sku)
		if err := r.rdb.Del(ctx, pool, all).Err(); err != nil {
			return 0, err
		}
		if _, err := r.streamSet(ctx, tx, all, nil, `SELECT code FROM sku_codes WHERE campaign_id = $1 AND sku = $2`, campaign, sku); err != nil {
			return 0, fmt.Errorf("sku %s: every code: %w", sku, err)
		}
		n, err := r.streamSet(ctx, tx, pool, held[sku], `SELECT sc.code FROM sku_codes sc
			WHERE sc.campaign_id = $1 AND sc.sku = $2 AND NOT EXISTS (SELECT 1 FROM claims cl
				WHERE cl.campaign_id = $1 AND cl.sku = $2 AND cl.partner_code = sc.code)`, campaign, sku)
		if err != nil {
			return 0, fmt.Errorf("sku %s: pool: %w", sku, err)
		}
		total += n
		if err := r.rdb.HSet(ctx, rkeys.SKU(campaign, sku), "pool", 1).Err(); err != nil {
			return 0, err
		}
	}
	// In-flight claims voided before the rewrite: their codes are free.
	if len(coded) > 0 {
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(coded))
		for i, f := range coded {
			cmds[i] = pipe.Get(ctx, rkeys.Request(campaign, f.requestID))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		for i, f := range coded {
			v := cmds[i].Val()
			// "V\t<claim_id>\t...": this claim was voided (another claim of the same
			// request, or a record gone, keeps the code held: under-selling, never twice).
			if len(v) > len(f.claimID)+2 && v[0] == 'V' && v[2:2+len(f.claimID)] == f.claimID && v[2+len(f.claimID)] == '\t' {
				n, err := r.rdb.SAdd(ctx, rkeys.CodePool(campaign, f.sku), f.code).Result()
				if err != nil {
					return 0, err
				}
				total += n
			}
		}
	}
	return total, nil
}

// streamSet adds the codes query returns (minus skip) to key in chunks; it returns how
// many it added.
func (r *Recoverer) streamSet(ctx context.Context, tx pgx.Tx, key string, skip map[string]bool, query string, args ...any) (int64, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var added int64
	batch := make([]any, 0, r.cfg.Chunk)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := r.rdb.SAdd(ctx, key, batch...).Result()
		added += n
		batch = batch[:0]
		return err
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return 0, err
		}
		if skip[c] {
			continue
		}
		batch = append(batch, c)
		if len(batch) >= r.cfg.Chunk {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	err = flush()
	return added, err
}
