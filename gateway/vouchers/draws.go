package vouchers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/voucher"
)

// Draws reads lottery draws that won nothing for GET /v1/claims/{draw_id} (api.Draws;
// DESIGN.md "Lottery"). Such a draw is no claim: claim.lua writes it an outbox entry and
// an idempotency record but no inflight field, and the settler a draws row but no claims
// row. So a draw in flight is found in its campaign's outbox (entry field "c" is the
// draw_id, "r" its request_id, whose record says whether it still stands), and a
// settled one in the draws table.
//
// Redis is read before Postgres: the settler deletes the outbox entry only after the
// draws row has committed, so a draw missed in the outbox (already cleaned up) is in the
// table when it is read next. The other order could miss a draw settling in between.
//
// The outbox holds what the settler has not written yet - normally a handful of entries,
// since it keeps up within milliseconds - and is read newest first, at most MaxOutbox
// entries. A longer outbox (the settler far behind) that does not show the draw, with no
// draws row either, is ErrUndecided: 503, retry, the same for every id, so it says
// nothing about the id.
type Draws struct {
	pg  *pgxpool.Pool
	rdb *redis.Client
	// MaxOutbox is the most outbox entries one lookup reads (default 2048).
	MaxOutbox int64
}

// ErrUndecided: the outbox was longer than MaxOutbox and the draw was neither in its
// newest entries nor a draws row, so whether it exists cannot be told now.
var ErrUndecided = errors.New("vouchers: draw lookup: the outbox is longer than MaxOutbox (the settler is behind)")

// NewDraws builds the draw reader on the gateway's Postgres pool and Redis client.
func NewDraws(pg *pgxpool.Pool, rdb *redis.Client) (*Draws, error) {
	if pg == nil || rdb == nil {
		return nil, errors.New("vouchers: a Postgres pool and a Redis client are required")
	}
	return &Draws{pg: pg, rdb: rdb, MaxOutbox: 2048}, nil
}

// NoPrizeDraw reports the no-prize draw drawID (api.Draws). A draw_id has a claim_id's
// form, "<campaign>.<random>"; an id of a campaign that is not a lottery is no draw.
func (d *Draws) NoPrizeDraw(ctx context.Context, drawID string) (voucher.Draw, bool, error) {
	camp := claimer.CampaignOfClaim(drawID)
	if camp == "" {
		return voucher.Draw{}, false, nil
	}
	kind, err := d.rdb.HGet(ctx, rkeys.Meta(camp), "kind").Result()
	switch {
	case err != nil && !errors.Is(err, redis.Nil):
		return voucher.Draw{}, false, fmt.Errorf("draw %s: campaign kind: %w", drawID, err)
	case err == nil && kind != "lottery":
		return voucher.Draw{}, false, nil
	}
	// A meta without a kind (Redis lost the campaign, recovery is rebuilding it) has no
	// outbox to read, but its settled draws are rows.
	truncated := false
	if err == nil {
		dr, found, trunc, err := d.inFlight(ctx, camp, drawID)
		if err != nil || found {
			return dr, found, err
		}
		truncated = trunc
	}
	var dr voucher.Draw
	err = d.pg.QueryRow(ctx, `SELECT draw_id, campaign_id, user_id, drawn_at FROM draws
		WHERE draw_id = $1 AND outcome = 'no_prize'`, drawID).Scan(&dr.DrawID, &dr.CampaignID, &dr.UserID, &dr.DrawnAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && truncated:
		return voucher.Draw{}, false, ErrUndecided
	case errors.Is(err, pgx.ErrNoRows):
		return voucher.Draw{}, false, nil
	case err != nil:
		return voucher.Draw{}, false, fmt.Errorf("read draw %s: %w", drawID, err)
	}
	dr.State, dr.DrawnAt = voucher.DrawSettled, dr.DrawnAt.UTC()
	return dr, true, nil
}

// inFlight looks for the draw in the campaign's outbox, newest first, and checks its
// idempotency record: a voided draw (its client heard 503) or a record that now names
// another claim is no draw. truncated reports that the outbox held more than MaxOutbox
// entries and the draw was not among those read.
func (d *Draws) inFlight(ctx context.Context, camp, drawID string) (dr voucher.Draw, found, truncated bool, err error) {
	max := d.MaxOutbox
	if max <= 0 {
		max = 2048
	}
	msgs, err := d.rdb.XRevRangeN(ctx, rkeys.Outbox(camp), "+", "-", max).Result()
	if err != nil {
		return dr, false, false, fmt.Errorf("draw %s: outbox: %w", drawID, err)
	}
	for _, m := range msgs {
		if c, _ := m.Values["c"].(string); c != drawID {
			continue
		}
		reqID, _ := m.Values["r"].(string)
		rec, err := d.rdb.Get(ctx, rkeys.Request(camp, reqID)).Result()
		if errors.Is(err, redis.Nil) {
			return dr, false, false, nil
		}
		if err != nil {
			return dr, false, false, fmt.Errorf("draw %s: record: %w", drawID, err)
		}
		f, ok := claim.ParseIdem(rec)
		if !ok || f.ClaimID != drawID || f.SKU != "" || f.State == claim.IdemVoided || f.State == claim.IdemRejected {
			return dr, false, false, nil
		}
		return voucher.Draw{DrawID: drawID, CampaignID: camp, UserID: f.UserID, State: voucher.DrawPending,
			DrawnAt: time.UnixMilli(f.ClaimedAtMs).UTC()}, true, false, nil
	}
	return dr, false, int64(len(msgs)) >= max, nil
}
