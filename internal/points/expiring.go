package points

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reminders of points about to expire (GET /admin/v1/points/expiring?within=...): the
// lots with points left whose expiry falls within the window from now, soonest first,
// paged by a cursor (the last row's expiry and grant id).

// Limits of the expiring list.
const (
	MaxExpiringWithin = 31 * 24 * time.Hour
	MaxExpiringPage   = 1000
)

// ExpiringLot is one lot to remind its owner of.
type ExpiringLot struct {
	UserID    string    `json:"user_id"`
	GrantID   string    `json:"grant_id"`
	Task      string    `json:"task"`
	Remaining int64     `json:"remaining"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ExpiringPage is one page of the list; Next is the cursor of the next page ("" at
// the end).
type ExpiringPage struct {
	Within string        `json:"within"`
	Lots   []ExpiringLot `json:"lots"`
	Next   string        `json:"next,omitempty"`
}

// Expiring lists lots expiring within the window (bad input: a FieldError naming it).
func (s *Service) Expiring(ctx context.Context, within time.Duration, after string, limit int) (*ExpiringPage, error) {
	switch {
	case within <= 0 || within > MaxExpiringWithin:
		return nil, fieldErr("within", "must be a duration more than 0 and at most %s, like 48h", MaxExpiringWithin)
	case limit < 1 || limit > MaxExpiringPage:
		return nil, fieldErr("limit", "must be 1..%d, got %d", MaxExpiringPage, limit)
	}
	curAt, curID := time.Time{}, ""
	if after != "" {
		us, id, ok := strings.Cut(after, "~")
		n, err := strconv.ParseInt(us, 10, 64)
		if !ok || err != nil || !ValidID(id) {
			return nil, fieldErr("after", "not a cursor from a previous page")
		}
		curAt, curID = time.UnixMicro(n), id
	}
	now := s.cfg.Now()
	rows, err := s.pg.Query(ctx, `SELECT user_id, grant_id, task_id, remaining, expires_at FROM points_lots
		WHERE remaining > 0 AND expires_at > $1 AND expires_at <= $2 AND (expires_at, grant_id) > ($3, $4)
		ORDER BY expires_at, grant_id LIMIT $5`, now, now.Add(within), curAt, curID, limit+1)
	if err != nil {
		return nil, fmt.Errorf("points expiring: %w", err)
	}
	lots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ExpiringLot, error) {
		var l ExpiringLot
		return l, r.Scan(&l.UserID, &l.GrantID, &l.Task, &l.Remaining, &l.ExpiresAt)
	})
	if err != nil {
		return nil, fmt.Errorf("points expiring: %w", err)
	}
	p := &ExpiringPage{Within: within.String(), Lots: lots}
	if len(lots) > limit {
		p.Lots = lots[:limit]
		last := p.Lots[limit-1]
		p.Next = strconv.FormatInt(last.ExpiresAt.UnixMicro(), 10) + "~" + last.GrantID
	}
	if p.Lots == nil {
		p.Lots = []ExpiringLot{}
	}
	return p, nil
}
