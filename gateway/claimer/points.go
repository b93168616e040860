package claimer

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// The points step of a points_item claim (DESIGN.md "Points: the cross-slot step"): the
// price is held in the user's slot before claim.lua decides in the campaign's slot, and
// given back when the claim is not accepted. Every step is one call on one slot:
//
//  1. index: HSET fg:{c}:pholds "<request_id>\t<user>" "<ms>:<token>" (campaign slot),
//     so the settler's sweep finds a hold this gateway dies holding;
//  2. reserve (user slot, internal/points): frozen -> 403 blocked, short -> 409
//     insufficient_points (nothing taken either way), else the price is held for
//     r = <campaign>:<request_id> by this attempt's token (a held r is shared);
//  3. decide: claim.lua and the produce, as for a voucher;
//  4. accepted: the hold stays; the settler confirms it (Spend) when it writes the
//     claim row. Rejected (nothing taken) with no accepted record (another attempt of
//     the request may share the hold), or a 503 whose request record says voided or
//     rejected: the hold is given back now (if this attempt is its latest) and the
//     index entry removed (if still this attempt's). Any other 503 (no record: the
//     script may still run; A or D: the claim may still become a row) leaves both to
//     the settler's sweep.

// PointsHolder is the user's-slot half (internal/points.Service).
type PointsHolder interface {
	Reserve(ctx context.Context, user, r, token string, price int64) (string, error)
	GiveBack(ctx context.Context, user, r, token string) (bool, error)
}

// Reserve answers of PointsHolder (internal/points' constants, by value: the claimer
// does not import the accounts package).
const (
	pointsReserved     = "reserved"
	pointsInsufficient = "insufficient_points"
	pointsBlocked      = "blocked"
	pointsSpent        = "spent"
)

// ErrNoPoints: a points_item campaign reached a claimer without a PointsHolder: 503,
// nothing taken (a points claim is never decided without its price held).
var ErrNoPoints = errors.New("claimer: points_item campaign but no points accounts configured")

func parsePrices(h map[string]string) map[string]int64 {
	if h["kind"] != "points_item" {
		return nil
	}
	m := make(map[string]int64, len(h))
	for f, v := range h {
		if sku, ok := strings.CutPrefix(f, "s:"); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
				m[sku] = n
			}
		}
	}
	return m
}

func (c *Claimer) doPoints(ctx context.Context, rt *route, r *Request) error {
	if _, ok := rt.skus[r.SKU]; !ok {
		return c.decide(ctx, rt, r) // claim.lua answers unknown_sku; nothing to hold
	}
	price, ok := rt.points[r.SKU]
	if !ok || c.cfg.Points == nil {
		c.log.Error("points_item claim without a price or points accounts: refused 503", "campaign", r.CampaignID, "sku", r.SKU)
		return ErrNoPoints
	}
	res := rkeys.PointsReservation(r.CampaignID, r.RequestID)
	field := rkeys.PointsHoldField(r.RequestID, r.UserID)
	token := strconv.FormatUint(rand.Uint64(), 36)
	val := strconv.FormatInt(time.Now().UnixMilli(), 10) + ":" + token
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	err := c.rdb.HSet(rctx, rkeys.PointsHolds(r.CampaignID), field, val).Err()
	cancel()
	if err != nil {
		c.metrics.redisErrors.Inc()
		return errors.Join(ErrUnavailable, err)
	}
	rctx, cancel = context.WithTimeout(ctx, 2*c.cfg.RedisTimeout) // a NOT_WARM rebuild included
	out, err := c.cfg.Points.Reserve(rctx, r.UserID, res, token, price)
	cancel()
	if err != nil {
		// The hold may or may not be in place: the index entry lets the sweep decide.
		c.metrics.redisErrors.Inc()
		return errors.Join(ErrUnavailable, err)
	}
	switch out {
	case pointsInsufficient:
		r.Outcome = Outcome{Code: claim.CodeInsufficientPoints}
		c.unhold(r.CampaignID, field, val)
		return nil
	case pointsBlocked:
		r.Outcome = Outcome{Code: claim.CodeBlocked}
		c.unhold(r.CampaignID, field, val)
		return nil
	case pointsReserved, pointsSpent:
	default:
		return errors.Join(ErrUnavailable, errors.New("points reserve answered "+out))
	}
	err = c.decide(ctx, rt, r)
	if err == nil && r.Code == claim.CodeAccepted {
		return nil // held until the settler confirms it
	}
	if err == nil {
		if res, ok := claim.ResultOf(r.Code); ok && !res.NothingTaken {
			return nil // not a code that leaves the claim untaken: leave it to the sweep
		}
	}
	// Not accepted by this attempt. Another attempt of the same request_id may share
	// the hold and have been accepted: the request's record says so (A, D or S).
	st, known := c.recordState(r)
	switch {
	case !known:
		return err // Redis did not answer: the sweep decides
	case st == claim.IdemAccepted || st == claim.IdemDurable || st == claim.IdemSettled:
		return err // accepted (by another attempt, or a lost answer): the settler confirms
	case err != nil && st != claim.IdemVoided && st != claim.IdemRejected:
		return err // no record after a failed call: the script may still run; the sweep decides
	}
	if out == pointsSpent {
		return err // nothing held by this attempt
	}
	gctx, cancel := context.WithTimeout(context.Background(), 2*c.cfg.RedisTimeout)
	defer cancel()
	if _, gerr := c.cfg.Points.GiveBack(gctx, r.UserID, res, token); gerr != nil {
		c.log.Warn("points give-back failed; the settler's sweep gives it back", "reservation", res, "err", gerr)
		return err
	}
	c.unhold(r.CampaignID, field, val)
	return err
}

// recordState reads the state letter of the request's record (0: none); known is
// false when Redis did not answer.
func (c *Claimer) recordState(r *Request) (byte, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	defer cancel()
	rec, err := c.rdb.Get(ctx, rkeys.Request(r.CampaignID, r.RequestID)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, true
	}
	if err != nil {
		return 0, false
	}
	st, _ := claim.IdemState(rec)
	return st, true
}

func (c *Claimer) unhold(campaign, field, val string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	defer cancel()
	if err := scripts.Unhold.Run(ctx, c.rdb, []string{rkeys.PointsHolds(campaign)}, field, val).Err(); err != nil {
		c.log.Debug("holds index cleanup failed; the sweep removes it", "campaign", campaign, "err", err)
	}
}
