package recovery

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// pushEscrow is one push's escrow as the books say (DESIGN.md "Push": a Redis loss).
type pushEscrow struct {
	id     string
	over   bool             // done: its escrow was released (st 2: a late hold is told so)
	units  map[string]int64 // running: per SKU, its users after the cursor with no row
	amount int64
}

// readPushEscrows reads, in the rebuild's snapshot, what each running push of campaign
// still holds: the users after its cursor whose claim on the push's channel is not a
// row, per SKU, and their face value. A user whose claim is in flight is counted too (its
// unit is also in the rebuilt taken): the escrow then holds one unit too many, which
// other claims cannot use until the push ends and releases what it did not use - it can
// under-sell for the push's duration, never oversell (claim.lua bounds a push's claim by
// the real stock and budget).
func readPushEscrows(ctx context.Context, tx pgx.Tx, campaign string, skus []skuBook) ([]pushEscrow, error) {
	rows, err := tx.Query(ctx, `SELECT push_id, state, cursor_user FROM pushes
		WHERE campaign_id = $1 AND state IN ('running', 'done') ORDER BY push_id`, campaign)
	if err != nil {
		return nil, err
	}
	type head struct{ id, state, cursor string }
	heads, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (head, error) {
		var h head
		return h, r.Scan(&h.id, &h.state, &h.cursor)
	})
	if err != nil {
		return nil, err
	}
	value := map[string]int64{}
	for _, s := range skus {
		value[s.sku] = s.value
	}
	out := make([]pushEscrow, 0, len(heads))
	for _, h := range heads {
		e := pushEscrow{id: h.id, over: h.state == "done", units: map[string]int64{}}
		if !e.over {
			urows, err := tx.Query(ctx, `SELECT u.sku, count(*) FROM push_users u
				WHERE u.campaign_id = $1 AND u.push_id = $2 AND u.user_id > $3
				  AND NOT EXISTS (SELECT 1 FROM claims cl WHERE cl.campaign_id = $1 AND cl.user_id = u.user_id
				                  AND cl.channel = 'push:' || $2)
				GROUP BY u.sku`, campaign, h.id, h.cursor)
			if err != nil {
				return nil, err
			}
			type left struct {
				sku string
				n   int64
			}
			ls, err := pgx.CollectRows(urows, func(r pgx.CollectableRow) (left, error) {
				var l left
				return l, r.Scan(&l.sku, &l.n)
			})
			if err != nil {
				return nil, err
			}
			for _, l := range ls {
				e.units[l.sku] = l.n
				e.amount += l.n * value[l.sku]
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// writePushEscrows writes the escrows back (push.lua rebuild: the escrow hash replaced,
// every SKU's and the meta's held set to the running pushes' sum) while this recovery
// still holds the campaign's fence, before rebuild.lua lifts it.
func writePushEscrows(ctx context.Context, rdb redis.Scripter, campaign, token string, skus []skuBook, es []pushEscrow) error {
	keys := []string{rkeys.Meta(campaign), rkeys.Pushes(campaign)}
	args := []any{"rebuild", token, len(skus)}
	for _, s := range skus {
		keys = append(keys, rkeys.SKU(campaign, s.sku))
		args = append(args, s.sku)
	}
	args = append(args, len(es))
	for _, e := range es {
		st := 1
		if e.over {
			st = 2
		}
		args = append(args, e.id, st, e.amount)
		for _, s := range skus {
			args = append(args, e.units[s.sku])
		}
	}
	res, err := scripts.Push.Run(ctx, rdb, keys, args...).Slice()
	if err != nil {
		return fmt.Errorf("push escrows: %w", err)
	}
	if n, _ := res[0].(int64); n != scripts.PushHeld {
		return fmt.Errorf("push escrows: another recovery took the campaign over")
	}
	return nil
}
