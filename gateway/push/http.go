package push

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/gateway/admin"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/risk/audit"
)

// ActionPush is the audit action of a push made through the admin API.
const ActionPush = "admin.push"

// HTTP serves the push routes on the admin listener (admin.Config.Routes; the token is
// checked before).
type HTTP struct {
	svc   *Service
	audit *pgxpool.Pool
	log   *slog.Logger
}

// NewHTTP builds the routes; auditPG (may be nil) is where a new push is audited.
func NewHTTP(svc *Service, auditPG *pgxpool.Pool, log *slog.Logger) *HTTP {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &HTTP{svc: svc, audit: auditPG, log: log}
}

// AdminRoute serves PUT and GET /admin/v1/campaigns/{id}/pushes/{push_id}.
func (h *HTTP) AdminRoute(ctx *fasthttp.RequestCtx, parts []string) bool {
	if len(parts) != 4 || parts[0] != "campaigns" || parts[1] == "" || parts[2] != "pushes" {
		return false
	}
	campaign, pushID := parts[1], parts[3]
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	switch {
	case ctx.IsPut():
		body, err := DecodeBody(ctx.Request.Body())
		if err != nil {
			h.writeErr(ctx, err)
			return true
		}
		p, created, err := h.svc.Put(c, campaign, pushID, body, admin.ActorOf(ctx))
		if created && h.audit != nil {
			// Audited when made, refused or not: who pushed what to whom.
			st := audit.State{"tiers": string(mustJSON(body.Tiers))}
			if p != nil {
				st["state"], st["total"] = p.State, jsonInt(p.Users.Total)
			}
			var rf *Refusal
			if errors.As(err, &rf) {
				st["state"], st["reason"], st["total"] = StateRefused, rf.Reason, jsonInt(rf.Progress.Users.Total)
			}
			if _, aerr := audit.Record(c, h.audit, admin.ActorOf(ctx), ActionPush, "push:"+campaign+"/"+pushID,
				audit.State{}, st, ""); aerr != nil {
				h.log.Error("push made but not audited", "campaign", campaign, "push", pushID, "err", aerr)
			}
		}
		if err != nil {
			h.writeErr(ctx, err)
			return true
		}
		status := fasthttp.StatusOK
		if created {
			status = fasthttp.StatusAccepted
		}
		write(ctx, status, p)
	case ctx.IsGet() || ctx.IsHead():
		p, err := h.svc.Get(c, campaign, pushID)
		if err != nil {
			h.writeErr(ctx, err)
			return true
		}
		write(ctx, fasthttp.StatusOK, p)
	default:
		ctx.Response.Header.Set("Allow", "GET, HEAD, PUT")
		write(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
	}
	return true
}

func jsonInt(n int64) string { return string(mustJSON(n)) }

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// writeErr maps the service's errors to statuses in one place.
func (h *HTTP) writeErr(ctx *fasthttp.RequestCtx, err error) {
	var fe *FieldError
	var rf *Refusal
	var ce *ConflictError
	switch {
	case errors.As(err, &fe):
		write(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "invalid_request", "field": fe.Field, "message": fe.Error()})
	case errors.As(err, &rf):
		write(ctx, fasthttp.StatusConflict, map[string]any{"result": "rejected", "reason": rf.Reason, "push": rf.Progress})
	case errors.As(err, &ce):
		write(ctx, fasthttp.StatusConflict, map[string]string{"error": "conflict", "field": ce.Field, "message": ce.Error()})
	case errors.Is(err, catalog.ErrNotFound):
		write(ctx, fasthttp.StatusNotFound, map[string]string{"error": "unknown_campaign"})
	case errors.Is(err, ErrNotFound):
		write(ctx, fasthttp.StatusNotFound, map[string]string{"error": "unknown_push"})
	default:
		// Postgres or Redis away: the same PUT again is safe (the push is made once and
		// held once; a push left escrowing is held by the runner).
		h.log.Warn("push request failed", "path", string(ctx.Path()), "err", err)
		ctx.Response.Header.Set("Retry-After", "1")
		write(ctx, fasthttp.StatusServiceUnavailable, map[string]string{"error": "unavailable",
			"message": "try again with the same request"})
	}
}

func write(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = fasthttp.StatusInternalServerError, []byte(`{"error":"internal"}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
