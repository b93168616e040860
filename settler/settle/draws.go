package settle

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashgate/flashgate/internal/claim"
)

// Lottery draws (DESIGN.md "Lottery"; migration 0013): every draw on flash.claims - won
// or not - becomes a draws row; a won draw is also a claim row (and its ledger entry),
// written in the same transaction. A draw that won nothing (no SKU, value 0) is only a
// draws row. Both inserts skip what is already there (draw_id, or the campaign's
// request_id), so redelivery writes nothing twice, exactly as for claims.

const drawsSQL = `WITH ins AS (INSERT INTO draws (draw_id, campaign_id, request_id, user_id, device_id, channel,
	odds_version, random, pick, outcome, sku, value, drawn_at)
SELECT d, c, rq, u, dv, ch, ver, r, nullif(p, ''), CASE WHEN s = '' THEN 'no_prize' ELSE 'won' END,
	nullif(s, ''), v, t
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
	$8::bigint[], $9::text[], $10::text[], $11::bigint[], $12::timestamptz[]) AS x(d, c, rq, u, dv, ch, ver, r, p, s, v, t)
ON CONFLICT DO NOTHING
RETURNING outcome)
SELECT count(*) FILTER (WHERE outcome = 'no_prize') FROM ins`

func hasDraws(items []*item) bool {
	for _, it := range items {
		if it.rec.Draw != "" {
			return true
		}
	}
	return false
}

// writeWithDraws writes a batch holding draws: its claims (every record but the
// no-prize draws) by unnest and its draws, in one transaction. It returns the number
// of new claim rows plus the new rows of draws that won nothing: the records it wrote
// (the settler's written and duplicates counts stay true: a no-prize draw is written
// once, a duplicate after).
func writeWithDraws(ctx context.Context, pg *pgxpool.Pool, items []*item) (int64, error) {
	claims := make([]*item, 0, len(items))
	n := 0
	for _, it := range items {
		if !it.rec.NoPrize() {
			claims = append(claims, it)
		}
		if it.rec.Draw != "" {
			n++
		}
	}
	var (
		ids, camps, reqs, users, devs = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		chans, vers, picks, skus      = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		rs, values                    = make([]int64, 0, n), make([]int64, 0, n)
		at                            = make([]time.Time, 0, n)
	)
	for _, it := range items {
		r := &it.rec
		if r.Draw == "" {
			continue
		}
		d, ok := claim.ParseDraw(r.Draw)
		if !ok {
			return 0, fmt.Errorf("draw %s: malformed %q", r.ClaimID, r.Draw) // Decode refused it already
		}
		ids, camps, reqs, users, devs = append(ids, r.ClaimID), append(camps, r.CampaignID), append(reqs, r.RequestID),
			append(users, r.UserID), append(devs, r.DeviceID)
		chans, vers, picks, skus = append(chans, channelOf(r)), append(vers, d.OddsVersion), append(picks, d.Pick), append(skus, r.SKU)
		rs, values, at = append(rs, d.R), append(values, r.Value), append(at, r.ClaimedAt())
	}
	var written int64
	err := pgx.BeginFunc(ctx, pg, func(tx pgx.Tx) error {
		if len(claims) > 0 {
			w, err := writeByUnnest(ctx, tx, claims)
			if err != nil {
				return err
			}
			written = w
		}
		var none int64
		if err := tx.QueryRow(ctx, drawsSQL, ids, camps, reqs, users, devs, chans, vers, rs, picks, skus, values, at).Scan(&none); err != nil {
			return fmt.Errorf("insert %d draws: %w", n, err)
		}
		written += none
		return nil
	})
	if err != nil {
		return 0, err
	}
	return written, nil
}
