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
// row. So a settled draw is read from the draws table, and one in flight is found in its
// campaign's outbox (entry field "c" is the draw_id, "r" its request_id, whose record
// says whether it still stands).
//
// Postgres is read first (a settled draw costs one primary-key lookup), the outbox next,
// and Postgres again when the outbox did not show the draw: the settler trims an entry
// only after its row has committed, so a draw that settles between the first two reads
// is a row by the third.
//
// The outbox holds what the settler has not written yet - normally a handful of entries,
// since it keeps up within milliseconds - and is read newest first, a page at a time, at
// most MaxOutbox entries: what an id that is no draw costs. A longer outbox (the settler
// far behind) that does not show the draw, with no draws row either, is ErrUndecided:
// 503, retry, the same for every id, so it says nothing about the id.
type Draws struct {
	pg  *pgxpool.Pool
	rdb *redis.Client
	// MaxOutbox is the most outbox entries one lookup reads (default 1024).
	MaxOutbox int64
}

// ErrUndecided: the outbox was longer than MaxOutbox and the draw was neither in its
// newest entries nor a draws row, so whether it exists cannot be told now.
var ErrUndecided = errors.New("vouchers: draw lookup: the outbox is longer than MaxOutbox (the settler is behind)")

// defaultMaxOutbox and outboxPage bound an outbox read (Draws.MaxOutbox).
const (
	defaultMaxOutbox = 1024
	outboxPage       = 128
)

// NewDraws builds the draw reader on the gateway's Postgres pool and Redis client.
func NewDraws(pg *pgxpool.Pool, rdb *redis.Client) (*Draws, error) {
	if pg == nil || rdb == nil {
		return nil, errors.New("vouchers: a Postgres pool and a Redis client are required")
	}
	return &Draws{pg: pg, rdb: rdb, MaxOutbox: defaultMaxOutbox}, nil
}

// NoPrizeDraw reports the no-prize draw drawID (api.Draws). A draw_id has a claim_id's
// form, "<campaign>.<random>"; an id of a campaign that is not a lottery is no draw.
func (d *Draws) NoPrizeDraw(ctx context.Context, drawID string) (voucher.Draw, bool, error) {
	camp := claimer.CampaignOfClaim(drawID)
	if camp == "" {
		return voucher.Draw{}, false, nil
	}
	kind, err := d.rdb.HGet(ctx, rkeys.Meta(camp), "kind").Result()
	lost := errors.Is(err, redis.Nil)
	switch {
	case err != nil && !lost:
		return voucher.Draw{}, false, fmt.Errorf("draw %s: campaign kind: %w", drawID, err)
	case !lost && kind != "lottery":
		return voucher.Draw{}, false, nil
	}
	if dr, ok, err := d.settled(ctx, drawID); err != nil || ok {
		return dr, ok, err
	}
	if lost {
		// A meta without a kind (Redis lost the campaign, recovery is rebuilding it) has
		// no outbox to read; its settled draws were looked up above.
		return voucher.Draw{}, false, nil
	}
	dr, found, truncated, err := d.inFlight(ctx, camp, drawID)
	if err != nil || found {
		return dr, found, err
	}
	if dr, ok, err := d.settled(ctx, drawID); err != nil || ok {
		return dr, ok, err
	}
	if truncated {
		return voucher.Draw{}, false, ErrUndecided
	}
	return voucher.Draw{}, false, nil
}

// settled reads the draw's row, if it won nothing.
func (d *Draws) settled(ctx context.Context, drawID string) (voucher.Draw, bool, error) {
	var dr voucher.Draw
	err := d.pg.QueryRow(ctx, `SELECT draw_id, campaign_id, user_id, drawn_at FROM draws
		WHERE draw_id = $1 AND outcome = 'no_prize'`, drawID).Scan(&dr.DrawID, &dr.CampaignID, &dr.UserID, &dr.DrawnAt)
	switch {
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
		max = defaultMaxOutbox
	}
	end := "+"
	for read := int64(0); read < max; {
		n := min(outboxPage, max-read)
		msgs, err := d.rdb.XRevRangeN(ctx, rkeys.Outbox(camp), end, "-", n).Result()
		if err != nil {
			return dr, false, false, fmt.Errorf("draw %s: outbox: %w", drawID, err)
		}
		for _, m := range msgs {
			if c, _ := m.Values["c"].(string); c == drawID {
				reqID, _ := m.Values["r"].(string)
				dr, found, err := d.standing(ctx, camp, reqID, drawID)
				return dr, found, false, err
			}
		}
		if int64(len(msgs)) < n {
			return dr, false, false, nil // the whole outbox read
		}
		read += n
		end = "(" + msgs[len(msgs)-1].ID
	}
	return dr, false, true, nil
}

// standing reads the idempotency record of the outbox entry's request: a voided draw
// (its client heard 503), a missing record or one that now names another claim is no
// draw in flight.
func (d *Draws) standing(ctx context.Context, camp, reqID, drawID string) (voucher.Draw, bool, error) {
	rec, err := d.rdb.Get(ctx, rkeys.Request(camp, reqID)).Result()
	if errors.Is(err, redis.Nil) {
		return voucher.Draw{}, false, nil
	}
	if err != nil {
		return voucher.Draw{}, false, fmt.Errorf("draw %s: record: %w", drawID, err)
	}
	f, ok := claim.ParseIdem(rec)
	if !ok || f.ClaimID != drawID || f.SKU != "" || f.State == claim.IdemVoided || f.State == claim.IdemRejected {
		return voucher.Draw{}, false, nil
	}
	return voucher.Draw{DrawID: drawID, CampaignID: camp, UserID: f.UserID, State: voucher.DrawPending,
		DrawnAt: time.UnixMilli(f.ClaimedAtMs).UTC()}, true, nil
}
