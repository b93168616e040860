package api

import (
	"bytes"
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/voucher"
)

// GET /v1/me/claims (CONTRACT.md "Owner only"): the caller's vouchers, newest first,
// paged. Query: limit (1..100, default 20) and before (the "next" cursor of the
// previous page). The first page (no before) also lists the caller's pending claims -
// accepted, not yet settled into Postgres - ahead of the settled ones; later pages list
// settled vouchers only. Answer: {"claims":[voucher...],"next":"<cursor>"}, next absent
// on the last page.

// Cursor is a position in a user's vouchers (internal/voucher).
type Cursor = voucher.Cursor

// ParseCursor reads a cursor's text.
func ParseCursor(s []byte) (Cursor, bool) {
	i := bytes.IndexByte(s, '~')
	if i <= 0 {
		return Cursor{}, false
	}
	us, err := strconv.ParseInt(string(s[:i]), 10, 64)
	if err != nil || us < 0 || !validClaimID(s[i+1:]) {
		return Cursor{}, false
	}
	return Cursor{ClaimedAt: time.UnixMicro(us).UTC(), ClaimID: string(s[i+1:])}, true
}

// PendingMine lists a user's accepted claims not yet in Postgres (Redis).
type PendingMine interface {
	PendingOf(ctx context.Context, userID string) ([]Voucher, error)
}

const (
	mineDefaultLimit = 20
	mineMaxLimit     = 100
)

func (s *Server) mine(ctx *fasthttp.RequestCtx) {
	user, ok := s.reader(ctx)
	if !ok {
		return
	}
	args := ctx.QueryArgs()
	limit := mineDefaultLimit
	if v := args.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > mineMaxLimit {
			writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "limit: must be a whole number 1-100")
			return
		}
		limit = n
	}
	var before Cursor
	if v := args.Peek("before"); len(v) > 0 {
		if before, ok = ParseCursor(v); !ok {
			writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "before: not a cursor from a previous page's \"next\"")
			return
		}
	}
	if s.vouchers == nil {
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	lctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
	defer cancel()
	var list []Voucher
	if before.IsZero() && s.cfg.PendingMine != nil {
		p, err := s.cfg.PendingMine.PendingOf(lctx, user)
		if err != nil {
			s.log.Warn("pending claims of a user: lookup failed", "err", err)
			writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
			return
		}
		sort.Slice(p, func(i, j int) bool { return newer(p[i], p[j]) })
		list = p
	}
	// One more than the page, to know whether another page follows.
	settled, err := s.vouchers.Mine(lctx, user, before, limit+1)
	if err != nil {
		s.log.Warn("claims of a user: lookup failed", "err", err)
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	// A claim that settled between the two reads is in both: the settled row wins.
	if len(list) > 0 {
		seen := make(map[string]bool, len(settled))
		for _, v := range settled {
			seen[v.ClaimID] = true
		}
		kept := list[:0]
		for _, v := range list {
			if !seen[v.ClaimID] {
				kept = append(kept, v)
			}
		}
		list = kept
	}
	more := len(settled) > limit
	if more {
		settled = settled[:limit]
	}
	list = append(list, settled...)
	buf := append(make([]byte, 0, 256*len(list)+64), `{"claims":[`...)
	for i := range list {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendVoucher(buf, &list[i])
	}
	buf = append(buf, ']')
	if more {
		last := settled[len(settled)-1]
		buf = append(buf, `,"next":`...)
		buf = appendStr(buf, Cursor{ClaimedAt: last.ClaimedAt, ClaimID: last.ClaimID}.String())
	}
	buf = append(buf, '}')
	writeJSON(ctx, fasthttp.StatusOK, buf)
}

func newer(a, b Voucher) bool {
	if !a.ClaimedAt.Equal(b.ClaimedAt) {
		return a.ClaimedAt.After(b.ClaimedAt)
	}
	return a.ClaimID > b.ClaimID
}
