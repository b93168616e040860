package admin

import (
	"context"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/risk/audit"
)

// The admin API's audit (CONTRACT.md "Admin API"): every change made through it is a
// row in risk_audit - the same trail as riskctl's - with the acting token's name, the
// time, and the state before and after, read from Postgres around the change. GET
// /admin/v1/audit reads the trail back.
//
// The row is written after the change succeeded (the catalog's change spans Postgres
// and Redis and has no transaction to share); if writing it fails the change stands and
// the caller hears 500 audit_failed, so an unaudited change is never silent.

type ctxKey string

const actorKey ctxKey = "flashgate.admin.actor"

// ActorOf is the name of the admin token a request was authenticated with, for routes
// served through Config.Routes that audit their own changes (gateway/points).
func ActorOf(ctx *fasthttp.RequestCtx) string { return actorOf(ctx) }

func actorOf(ctx *fasthttp.RequestCtx) string {
	a, _ := ctx.UserValue(actorKey).(string)
	return a
}

// Snapshots: the audited state of one object as flat key → value (nested values as
// their JSON text), {} when it does not exist.
const (
	snapBusinessLine = `SELECT to_jsonb(b) - 'created_at' - 'updated_at' FROM business_lines b WHERE id = $1`
	snapCampaign     = `SELECT (to_jsonb(c) - 'created_at' - 'updated_at') || jsonb_build_object('skus',
		(SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object('sku', sku, 'stock', stock, 'value', value,
			'weight', weight, 'delivery_webhook', delivery_webhook)) ORDER BY sku), '[]'::jsonb)
		 FROM campaign_skus WHERE campaign_id = c.id)) FROM campaigns c WHERE id = $1`
	snapPaused  = `SELECT jsonb_build_object('paused', paused) FROM campaigns WHERE id = $1`
	snapSegment = `SELECT to_jsonb(s) - 'updated_at' FROM segments s WHERE name = $1`
	// A repair's audit row records who ran it and when; its report is in the answer.
	snapNothing = `SELECT NULL::jsonb WHERE $1::text IS NULL`
)

func (s *Server) snapshot(c context.Context, query, id string) (audit.State, error) {
	st := audit.State{}
	if s.cfg.Audit == nil {
		return st, nil
	}
	err := s.cfg.Audit.QueryRow(c, `SELECT coalesce((SELECT jsonb_object_agg(key, value #>> '{}') FROM jsonb_each(x)), '{}'::jsonb)
		FROM (SELECT (`+query+`) AS x) t`, id).Scan(&st)
	return st, err
}

// audited runs change between two snapshots of the object and records the change.
// It answers the request itself when the snapshot or the audit row fails; change
// answers it otherwise (and returns false when it failed, so nothing is recorded).
func (s *Server) audited(ctx *fasthttp.RequestCtx, action, scope, query, id string, change func() bool) {
	c, cancel := opContext()
	defer cancel()
	old, err := s.snapshot(c, query, id)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	if !change() || s.cfg.Audit == nil {
		return
	}
	nw, err := s.snapshot(c, query, id)
	if err == nil {
		_, err = audit.Record(c, s.cfg.Audit, actorOf(ctx), action, scope, old, nw, "")
	}
	if err != nil {
		s.log.Error("admin change made but not audited", "action", action, "scope", scope, "actor", actorOf(ctx), "err", err)
		s.writeValue(ctx, fasthttp.StatusInternalServerError, map[string]string{"error": "audit_failed",
			"message": "the change was made but its audit row could not be written: " + err.Error()})
	}
}

func ok2xx(ctx *fasthttp.RequestCtx) bool {
	c := ctx.Response.StatusCode()
	return c >= 200 && c < 300
}

// listAudit answers GET /admin/v1/audit?since=24h&actor=NAME&scope=S&limit=200: the
// newest rows (at most limit, default 200, up to 10000) since then, oldest first.
func (s *Server) listAudit(ctx *fasthttp.RequestCtx) {
	if s.cfg.Audit == nil {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	q := ctx.QueryArgs()
	f := audit.Filter{Since: time.Now().Add(-24 * time.Hour), Limit: 200,
		Actor: string(q.Peek("actor")), Scope: string(q.Peek("scope"))}
	if v := string(q.Peek("since")); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			f.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, v); err == nil {
			f.Since = t
		} else {
			s.writeErr(ctx, &catalog.FieldError{Field: "since", Msg: "want a duration like 24h or an RFC 3339 time"})
			return
		}
	}
	if v := string(q.Peek("limit")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			s.writeErr(ctx, &catalog.FieldError{Field: "limit", Msg: "want 1-10000"})
			return
		}
		f.Limit = n
	}
	c, cancel := opContext()
	defer cancel()
	rows, err := audit.ListBy(c, s.cfg.Audit, f)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	if rows == nil {
		rows = []audit.Row{}
	}
	s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"rows": rows})
}
