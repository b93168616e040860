package catalog

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// The review (CONTRACT.md "Issuance and the voucher's life", issue 18): which tiers and
// channels were worth the money. Per tier (the segments the claimants belong to, "*" for
// all users) and channel ("*" for all): vouchers issued, used (redeemed), the usage rate,
// users recalled (distinct users who USED one - not holders), the order amount redeemed
// and the average order amount. A use's amount is the order it was redeemed on (redeem
// against an order, migration 0011); a body-less redeem counts as used with no amount,
// so the average is over the uses that carried an order. A user is placed in a tier by
// the user who holds the voucher now (after a transfer, the receiver).

// ReviewRow is one (tier, channel) line of the review.
type ReviewRow struct {
	Tier          string  `json:"tier"`
	Channel       string  `json:"channel"`
	Issued        int64   `json:"issued"`
	Used          int64   `json:"used"`
	UsageRate     float64 `json:"usage_rate"`
	UsersRecalled int64   `json:"users_recalled"`
	AmountRedeem  int64   `json:"amount_redeemed"`
	AvgOrder      float64 `json:"average_order_amount"`
	withOrder     int64
}

const reviewAggregates = `count(*), count(*) FILTER (WHERE cl.state = 'redeemed'),
	count(DISTINCT cl.user_id) FILTER (WHERE cl.state = 'redeemed'),
	coalesce(sum(cl.order_amount) FILTER (WHERE cl.state = 'redeemed'), 0),
	count(cl.order_amount) FILTER (WHERE cl.state = 'redeemed')`

func (r *ReviewRow) finish() {
	if r.Issued > 0 {
		r.UsageRate = float64(r.Used) / float64(r.Issued)
	}
	if r.withOrder > 0 {
		r.AvgOrder = float64(r.AmountRedeem) / float64(r.withOrder)
	}
}

// Review reads the campaign's review in one snapshot: the all-users rows first ("*",
// per channel and all channels), then each tier's.
func (c *Catalog) Review(ctx context.Context, id string) ([]ReviewRow, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	tx, err := c.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("review %s: %w", id, err)
	}
	defer tx.Rollback(ctx)
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = $1)`, id).Scan(&exists); err != nil {
		return nil, fmt.Errorf("review %s: %w", id, err)
	}
	if !exists {
		return nil, ErrNotFound
	}
	out, err := reviewRows(ctx, tx, id)
	if err != nil {
		return nil, fmt.Errorf("review %s: %w", id, err)
	}
	return out, tx.Commit(ctx)
}

// reviewRows reads the review in tx (the report's snapshot, or Review's own).
func reviewRows(ctx context.Context, tx pgx.Tx, id string) ([]ReviewRow, error) {
	out := []ReviewRow{}
	scan := func(rows pgx.Rows, tiered bool) error {
		defer rows.Close()
		for rows.Next() {
			var tier, channel *string
			var r ReviewRow
			dest := []any{&channel, &r.Issued, &r.Used, &r.UsersRecalled, &r.AmountRedeem, &r.withOrder}
			if tiered {
				dest = append([]any{&tier}, dest...)
			}
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			r.Tier, r.Channel = "*", "*"
			if tier != nil {
				r.Tier = *tier
			}
			if channel != nil {
				r.Channel = *channel
			}
			r.finish()
			out = append(out, r)
		}
		return rows.Err()
	}
	rows, err := tx.Query(ctx, `SELECT cl.channel, `+reviewAggregates+` FROM claims cl WHERE cl.campaign_id = $1
		GROUP BY GROUPING SETS ((), (cl.channel)) ORDER BY cl.channel NULLS FIRST`, id)
	if err != nil {
		return nil, err
	}
	if err := scan(rows, false); err != nil {
		return nil, err
	}
	rows, err = tx.Query(ctx, `SELECT m.segment, cl.channel, `+reviewAggregates+`
		FROM claims cl JOIN segment_members m ON m.user_id = cl.user_id WHERE cl.campaign_id = $1
		GROUP BY GROUPING SETS ((m.segment), (m.segment, cl.channel)) ORDER BY m.segment, cl.channel NULLS FIRST`, id)
	if err != nil {
		return nil, err
	}
	if err := scan(rows, true); err != nil {
		return nil, err
	}
	return out, nil
}

// ReviewCSVHeader is the review CSV's header line.
var ReviewCSVHeader = []string{"tier", "channel", "issued", "used", "usage_rate", "users_recalled",
	"amount_redeemed", "average_order_amount"}

// WriteReviewCSV writes review rows as CSV.
func WriteReviewCSV(w io.Writer, rows []ReviewRow) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(ReviewCSVHeader); err != nil {
		return err
	}
	for _, r := range rows {
		i := func(n int64) string { return strconv.FormatInt(n, 10) }
		if err := cw.Write([]string{r.Tier, r.Channel, i(r.Issued), i(r.Used), strconv.FormatFloat(r.UsageRate, 'f', 4, 64),
			i(r.UsersRecalled), i(r.AmountRedeem), strconv.FormatFloat(r.AvgOrder, 'f', 2, 64)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Expiring holders (GET /admin/v1/campaigns/{id}/expiring?within=48h): the vouchers
// still usable that expire within the window, oldest expiry first, for reminders.

// MaxExpiringWithin bounds the window; MaxExpiringPage a page.
const (
	MaxExpiringWithin = 31 * 24 * time.Hour
	MaxExpiringPage   = 1000
)

// ExpiringHolder is one voucher about to expire and its holder.
type ExpiringHolder struct {
	ClaimID   string    `json:"claim_id"`
	UserID    string    `json:"user_id"`
	SKU       string    `json:"sku"`
	Value     int64     `json:"value"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ExpiringPage is one page; Next is the cursor of the next ("" at the end).
type ExpiringPage struct {
	Holders []ExpiringHolder `json:"holders"`
	Next    string           `json:"next,omitempty"`
}

// Expiring lists settled, unrevoked vouchers of the campaign expiring within the window
// after "after" (the cursor a previous page returned: "<expires_at unix µs>~<claim_id>").
func (c *Catalog) Expiring(ctx context.Context, id string, within time.Duration, after string, limit int) (*ExpiringPage, error) {
	switch {
	case !ValidID(id):
		return nil, ErrNotFound
	case within <= 0 || within > MaxExpiringWithin:
		return nil, fieldErr("within", "must be a duration more than 0 and at most %s, like 48h", MaxExpiringWithin)
	case limit < 1 || limit > MaxExpiringPage:
		return nil, fieldErr("limit", "must be 1..%d, got %d", MaxExpiringPage, limit)
	}
	var curAt time.Time
	var curID string
	if after != "" {
		us, cid, ok := cutCursor(after)
		if !ok {
			return nil, fieldErr("after", "not a cursor from a previous page")
		}
		curAt, curID = time.UnixMicro(us), cid
	}
	var exists bool
	if err := c.pg.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = $1)`, id).Scan(&exists); err != nil {
		return nil, fmt.Errorf("expiring %s: %w", id, err)
	}
	if !exists {
		return nil, ErrNotFound
	}
	rows, err := c.pg.Query(ctx, `SELECT claim_id, user_id, sku, value, expires_at FROM claims
		WHERE campaign_id = $1 AND state = 'settled' AND revoked_at IS NULL
		  AND expires_at > now() AND expires_at <= now() + $2::interval
		  AND ($3::text = '' OR (expires_at, claim_id) > ($4, $3))
		ORDER BY expires_at, claim_id LIMIT $5`, id, within.String(), curID, curAt, limit+1)
	if err != nil {
		return nil, fmt.Errorf("expiring %s: %w", id, err)
	}
	defer rows.Close()
	p := &ExpiringPage{Holders: []ExpiringHolder{}}
	for rows.Next() {
		var h ExpiringHolder
		if err := rows.Scan(&h.ClaimID, &h.UserID, &h.SKU, &h.Value, &h.ExpiresAt); err != nil {
			return nil, fmt.Errorf("expiring %s: %w", id, err)
		}
		h.ExpiresAt = h.ExpiresAt.UTC()
		p.Holders = append(p.Holders, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("expiring %s: %w", id, err)
	}
	if len(p.Holders) > limit {
		p.Holders = p.Holders[:limit]
		last := p.Holders[limit-1]
		p.Next = strconv.FormatInt(last.ExpiresAt.UnixMicro(), 10) + "~" + last.ClaimID
	}
	return p, nil
}

func cutCursor(s string) (int64, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '~' {
			us, err := strconv.ParseInt(s[:i], 10, 64)
			if err != nil || !ValidID(s[i+1:]) {
				return 0, "", false
			}
			return us, s[i+1:], true
		}
	}
	return 0, "", false
}
