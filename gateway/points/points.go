// Package points serves the points mall's HTTP routes (CONTRACT.md "Points accounts"):
// POST /v1/points/grants (a task's source key in X-Source-Key) and GET /v1/me/points
// on the public listener, PUT/GET /admin/v1/points/tasks/{task} on the admin listener
// (audited). The accounts themselves are internal/points.
package points

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/gateway/admin"
	"github.com/flashgate/flashgate/internal/fielderr"
	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/risk/audit"
)

// HeaderKey carries a task's source key on POST /v1/points/grants.
const HeaderKey = "X-Source-Key"

// ActionTask is the audit action of PUT /admin/v1/points/tasks/{task} (0010's CHECK).
const ActionTask = "admin.points_task"

// Server is the points routes.
type Server struct {
	svc   *points.Service
	audit *pgxpool.Pool // nil: no audit (tests of the public routes only)
	log   *slog.Logger
}

// New builds the routes. auditPG is where admin changes are audited.
func New(svc *points.Service, auditPG *pgxpool.Pool, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{svc: svc, audit: auditPG, log: log}
}

var (
	pathGrants = []byte("/v1/points/grants")
	pathMine   = []byte("/v1/me/points")
)

func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// Public serves the public routes; false for any other path (api.Config.Points).
func (s *Server) Public(ctx *fasthttp.RequestCtx, path []byte, reader func(*fasthttp.RequestCtx) (string, bool)) bool {
	switch {
	case bytes.Equal(path, pathGrants):
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			s.write(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
			return true
		}
		s.grant(ctx)
	case bytes.Equal(path, pathMine):
		if !ctx.IsGet() {
			ctx.Response.Header.Set("Allow", "GET")
			s.write(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
			return true
		}
		user, ok := reader(ctx)
		if !ok {
			return true
		}
		c, cancel := opContext()
		defer cancel()
		a, err := s.svc.Account(c, user)
		if err != nil {
			s.writeErr(ctx, err)
			return true
		}
		ctx.Response.Header.Set("Cache-Control", "no-store")
		s.write(ctx, fasthttp.StatusOK, a)
	default:
		return false
	}
	return true
}

func (s *Server) grant(ctx *fasthttp.RequestCtx) {
	var req points.GrantReq
	if err := fielderr.DecodeStrict(ctx.Request.Body(), &req); err != nil {
		s.writeErr(ctx, err)
		return
	}
	c, cancel := opContext()
	defer cancel()
	res, err := s.svc.Grant(c, ctx.Request.Header.Peek(HeaderKey), &req)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	if res.Replayed {
		ctx.Response.Header.Set("Idempotent-Replayed", "true")
	}
	s.write(ctx, fasthttp.StatusOK, res)
}

// AdminRoute serves /admin/v1/points/tasks/{task} (admin.Config.Routes; the token is
// checked). PUT is audited with the acting token's name.
func (s *Server) AdminRoute(ctx *fasthttp.RequestCtx, parts []string) bool {
	if len(parts) == 2 && parts[0] == "points" && parts[1] == "report" {
		if !ctx.IsGet() && !ctx.IsHead() {
			ctx.Response.Header.Set("Allow", "GET, HEAD")
			s.write(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
			return true
		}
		c, cancel := opContext()
		defer cancel()
		rep, err := s.svc.Report(c)
		if err != nil {
			s.writeErr(ctx, err)
			return true
		}
		s.write(ctx, fasthttp.StatusOK, rep)
		return true
	}
	if len(parts) == 2 && parts[0] == "points" && parts[1] == "expiring" {
		s.expiring(ctx)
		return true
	}
	if len(parts) >= 3 && parts[0] == "points" && parts[1] == "accounts" && parts[2] != "" {
		return s.account(ctx, parts[2:])
	}
	if len(parts) != 3 || parts[0] != "points" || parts[1] != "tasks" || parts[2] == "" {
		return false
	}
	id := parts[2]
	c, cancel := opContext()
	defer cancel()
	switch {
	case ctx.IsPut():
		var in points.TaskPut
		if err := fielderr.DecodeStrict(ctx.Request.Body(), &in); err != nil {
			s.writeErr(ctx, err)
			return true
		}
		old, err := s.snapshot(c, id)
		if err != nil {
			s.writeErr(ctx, err)
			return true
		}
		res, err := s.svc.PutTask(c, id, &in)
		if err != nil {
			s.writeErr(ctx, err)
			return true
		}
		if s.audit != nil {
			nw, err := s.snapshot(c, id)
			if err == nil {
				_, err = audit.Record(c, s.audit, admin.ActorOf(ctx), ActionTask, "points_task:"+id, old, nw, "")
			}
			if err != nil {
				// The key must still reach the caller: it is never shown again.
				s.log.Error("points task changed but not audited", "task", id, "err", err)
				ctx.Response.Header.Set("Cache-Control", "no-store")
				s.write(ctx, fasthttp.StatusInternalServerError, map[string]any{"error": "audit_failed",
					"message": "the change was made but its audit row could not be written: " + err.Error(), "task": res})
				return true
			}
		}
		s.log.Info("points task set", "task", id, "created", res.Created, "key_issued", res.Key != "")
		ctx.Response.Header.Set("Cache-Control", "no-store")
		s.write(ctx, fasthttp.StatusOK, res)
	case ctx.IsGet() || ctx.IsHead():
		t, err := s.svc.GetTask(c, id)
		if err != nil {
			s.writeErr(ctx, err)
			return true
		}
		s.write(ctx, fasthttp.StatusOK, t)
	default:
		ctx.Response.Header.Set("Allow", "GET, HEAD, PUT")
		s.write(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
	}
	return true
}

// account serves GET /admin/v1/points/accounts/{user} and POST .../freeze and
// .../unfreeze {"reason"} (audited as points.freeze / points.unfreeze with the token's
// name, like riskctl points freeze).
func (s *Server) account(ctx *fasthttp.RequestCtx, rest []string) bool {
	user := rest[0]
	c, cancel := opContext()
	defer cancel()
	switch {
	case len(rest) == 1:
		if !ctx.IsGet() && !ctx.IsHead() {
			ctx.Response.Header.Set("Allow", "GET, HEAD")
			s.write(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
			return true
		}
		a, err := s.svc.Account(c, user)
		if err != nil {
			s.writeErr(ctx, err)
			return true
		}
		s.write(ctx, fasthttp.StatusOK, a)
	case len(rest) == 2 && (rest[1] == "freeze" || rest[1] == "unfreeze"):
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			s.write(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
			return true
		}
		var body struct {
			Reason string `json:"reason"`
		}
		if err := fielderr.DecodeStrict(ctx.Request.Body(), &body); err != nil {
			s.writeErr(ctx, err)
			return true
		}
		frozen := rest[1] == "freeze"
		id, err := s.svc.SetFrozen(c, user, frozen, body.Reason, admin.ActorOf(ctx))
		if err != nil {
			s.writeErr(ctx, err)
			return true
		}
		s.log.Info("points account "+rest[1], "user", user, "actor", admin.ActorOf(ctx))
		s.write(ctx, fasthttp.StatusOK, map[string]any{"user_id": user, "frozen": frozen, "reason": body.Reason, "audit_id": id})
	default:
		return false
	}
	return true
}

func (s *Server) snapshot(c context.Context, id string) (audit.State, error) {
	st := audit.State{}
	if s.audit == nil {
		return st, nil
	}
	err := s.audit.QueryRow(c, `SELECT coalesce((SELECT jsonb_object_agg(key, value #>> '{}') FROM jsonb_each(x)), '{}'::jsonb)
		FROM (SELECT (`+points.TaskAudit+`) AS x) t`, id).Scan(&st)
	return st, err
}

// writeErr maps the service's errors to statuses in one place.
func (s *Server) writeErr(ctx *fasthttp.RequestCtx, err error) {
	var fe *points.FieldError
	var rf *points.Refusal
	switch {
	case errors.As(err, &fe):
		s.write(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "invalid_request", "field": fe.Field, "message": fe.Error()})
	case errors.As(err, &rf):
		s.write(ctx, fasthttp.StatusConflict, map[string]string{"error": rf.Code, "message": rf.Msg})
	case errors.Is(err, points.ErrUnauthorized):
		s.write(ctx, fasthttp.StatusUnauthorized, map[string]string{"error": "unauthorized",
			"message": HeaderKey + ": missing, or not the key of any task"})
	case errors.Is(err, points.ErrForbidden):
		s.write(ctx, fasthttp.StatusForbidden, map[string]string{"error": "forbidden", "field": "task",
			"message": "task: the key is not this task's source key"})
	case errors.Is(err, points.ErrNotFound):
		s.write(ctx, fasthttp.StatusNotFound, map[string]string{"error": "not_found"})
	default:
		// ErrApply (recorded, not yet in the hot balance) or Postgres/Redis down: the
		// same request again is safe and applies the grant exactly once.
		s.log.Warn("points request failed", "path", string(ctx.Path()), "err", err)
		ctx.Response.Header.Set("Retry-After", "1")
		s.write(ctx, fasthttp.StatusServiceUnavailable, map[string]string{"error": "unavailable",
			"message": "try again with the same request"})
	}
}

func (s *Server) write(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = fasthttp.StatusInternalServerError, []byte(`{"error":"internal"}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// expiring answers GET /admin/v1/points/expiring?within=48h[&limit=N][&after=C]: the
// lots whose points expire within the window, soonest first, paged (points.Expiring;
// within at most 31 days, limit 1..1000, default 100).
func (s *Server) expiring(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		s.write(ctx, fasthttp.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
		return
	}
	q := ctx.QueryArgs()
	within, err := time.ParseDuration(string(q.Peek("within")))
	if err != nil {
		s.writeErr(ctx, &points.FieldError{Field: "within", Msg: "required, a duration like 48h"})
		return
	}
	limit := 100
	if v := q.Peek("limit"); v != nil {
		if limit, err = strconv.Atoi(string(v)); err != nil {
			s.writeErr(ctx, &points.FieldError{Field: "limit", Msg: "must be an integer"})
			return
		}
	}
	c, cancel := opContext()
	defer cancel()
	p, err := s.svc.Expiring(c, within, string(q.Peek("after")), limit)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	s.write(ctx, fasthttp.StatusOK, p)
}
