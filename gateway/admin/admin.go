// Package admin owns the gateway's admin listener (CONTRACT.md "Admin API"): business
// lines, campaigns, pause/resume, segments, the campaign report and reconciliation
// behind a bearer token, and, without a token, the operational endpoints /metrics,
// /healthz and /readyz. Definitions are the
// catalog's business; this package authenticates, routes, decodes bodies and maps the
// catalog's errors to statuses in one place (writeErr).
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/valyala/fasthttp/pprofhandler"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/fielderr"
	"github.com/flashgate/flashgate/internal/reconcile"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk/audit"
)

// MaxBodyBytes is the largest admin request body: a segment upload of a few million
// user ids fits; the listener's MaxRequestBodySize should be set to it.
const MaxBodyBytes = 64 << 20

// Check is one dependency /readyz asks: Ping must answer within the readiness timeout.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
	// Degrades marks a dependency the process serves its main traffic without (the
	// gateway decides and makes claims durable with Redis and the broker alone; Postgres
	// serves only lookups, redeem and the admin API). While it is down /readyz still
	// answers 200, naming it under "degraded", so a load balancer does not pull every
	// gateway out of rotation for a database outage that costs no claim.
	Degrades bool
}

// Config configures the admin API.
type Config struct {
	// Addr is the listen address. It is checked here, not used: without a Token the
	// admin API refuses anything but a loopback address.
	Addr string
	// Tokens are the named admin tokens (FLASH_ADMIN_TOKENS, auth.go); a request's
	// changes are audited under its token's name. None (and no Token): Addr must be
	// loopback. They come from the environment only and are never logged.
	Tokens []NamedToken
	// Token is the deprecated single token (FLASH_ADMIN_TOKEN), named "admin".
	Token string
	// Audit, when set, is the Postgres pool every change made through this API is
	// audited in (audit.go) and GET /admin/v1/audit reads.
	Audit *pgxpool.Pool
	// ReadyTimeout bounds each /readyz check (default 1s).
	ReadyTimeout time.Duration
	// Checks are the dependencies /readyz reports on.
	Checks []Check
	// Gatherer is what /metrics serves (the gateway's own registry).
	Gatherer prometheus.Gatherer
	// Reconciler, when set, answers the reconciliation state in GET
	// /admin/v1/campaigns/{id} and the /reconcile routes (POST repairs what its
	// dependencies allow). Nil: the campaign shows the catalog's own comparison and
	// /reconcile answers 404.
	Reconciler *reconcile.Reconciler
	// Console, when set, serves /console/ (the operations page, gateway/console): its
	// assets need no token; everything it shows comes from /admin/v1/ with the token.
	Console fasthttp.RequestHandler
	// Routes are more /admin/v1/ routes (the claim page's theme, the console's data),
	// tried after the token check and before 404. Each gets the path after /admin/v1/
	// split on "/" and returns false when it is not its own.
	Routes []func(ctx *fasthttp.RequestCtx, parts []string) bool
}

// Server is the admin API.
type Server struct {
	cfg      Config
	tokens   []tokenDigest
	loopback bool
	cat      *catalog.Catalog
	log      *slog.Logger
	metrics  fasthttp.RequestHandler
	draining atomic.Bool
}

// New validates cfg and builds the admin API.
func New(cfg Config, cat *catalog.Catalog, log *slog.Logger) (*Server, error) {
	if cat == nil {
		return nil, errors.New("admin: a catalog is required")
	}
	if cfg.Addr == "" {
		return nil, errors.New("admin config: Addr (FLASH_ADMIN_ADDR) is required")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("admin config: Addr (FLASH_ADMIN_ADDR) %q: %v", cfg.Addr, err)
	}
	if cfg.Token == "" && len(cfg.Tokens) == 0 && !Loopback(cfg.Addr) {
		return nil, fmt.Errorf("admin config: Addr (FLASH_ADMIN_ADDR) %q is not a loopback address; "+
			"set FLASH_ADMIN_TOKENS to serve the admin API beyond this machine", cfg.Addr)
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = time.Second
	}
	if cfg.ReadyTimeout < 0 {
		return nil, fmt.Errorf("admin config: ReadyTimeout=%s, want more than 0", cfg.ReadyTimeout)
	}
	for i, c := range cfg.Checks {
		if c.Name == "" || c.Ping == nil {
			return nil, fmt.Errorf("admin config: Checks[%d] needs a Name and a Ping", i)
		}
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, cat: cat, log: log, loopback: Loopback(cfg.Addr)}
	if err := s.setTokens(); err != nil {
		return nil, err
	}
	s.metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	return s, nil
}

// Loopback reports whether a listen address binds only the loopback interface. An empty
// host (":8081") binds every interface and is not loopback; of host names only
// "localhost" is taken on trust.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

var (
	bodyNotFound     = []byte(`{"error":"not_found"}`)
	bodyUnauthorized = []byte(`{"error":"unauthorized","message":"Authorization: Bearer token required"}`)
	bodyMethod       = []byte(`{"error":"method_not_allowed"}`)
	bodyHealthy      = []byte(`{"status":"ok"}`)
	bodyReady        = []byte(`{"status":"ready"}`)
	bodyUnavailable  = []byte(`{"error":"unavailable"}`)
	bodyDraining     = []byte(`{"status":"draining"}`)
)

// Handler routes the admin listener.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch path {
	case "/metrics":
		if !s.operational(ctx) {
			s.unauthorized(ctx)
			return
		}
		if s.method(ctx, "GET") {
			s.metrics(ctx)
		}
		return
	case "/healthz":
		if s.method(ctx, "GET") {
			writeJSON(ctx, fasthttp.StatusOK, bodyHealthy)
		}
		return
	case "/readyz":
		if s.method(ctx, "GET") {
			s.ready(ctx)
		}
		return
	}
	if s.cfg.Console != nil && (path == "/console" || strings.HasPrefix(path, "/console/")) {
		s.cfg.Console(ctx)
		return
	}
	if strings.HasPrefix(path, "/debug/pprof/") {
		// Go's profiles (CPU, heap, goroutines, ...): what an SRE takes from a gateway at
		// peak. They reveal internals, so they need the admin token like /admin/v1/.
		if !s.authorized(ctx) {
			s.unauthorized(ctx)
			return
		}
		pprofhandler.PprofHandler(ctx)
		return
	}
	rest, ok := strings.CutPrefix(path, "/admin/v1/")
	if !ok {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	// Authenticate before routing so that without a token nothing, not even which
	// routes exist, is learned.
	actor, ok := s.actor(ctx)
	if !ok {
		s.unauthorized(ctx)
		return
	}
	if crossSite(ctx) {
		writeJSON(ctx, fasthttp.StatusForbidden, bodyCrossSite)
		return
	}
	ctx.SetUserValue(actorKey, actor)
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 1 && parts[0] == "audit":
		if s.method(ctx, "GET") {
			s.listAudit(ctx)
		}
	case len(parts) == 2 && parts[0] == "business-lines" && parts[1] != "":
		if s.method(ctx, "PUT") {
			id := parts[1]
			s.audited(ctx, audit.ActionBusinessLine, "business_line:"+id, snapBusinessLine, id,
				func() bool { s.putBusinessLine(ctx, id); return ok2xx(ctx) })
		}
	case len(parts) == 2 && parts[0] == "campaigns" && parts[1] != "":
		switch {
		case ctx.IsPut():
			id := parts[1]
			s.audited(ctx, audit.ActionCampaign, "campaign:"+id, snapCampaign, id,
				func() bool { s.putCampaign(ctx, id); return ok2xx(ctx) })
		case ctx.IsGet():
			s.getCampaign(ctx, parts[1])
		default:
			s.notAllowed(ctx, "GET, PUT")
		}
	case len(parts) == 3 && parts[0] == "campaigns" && parts[1] != "" && (parts[2] == "pause" || parts[2] == "resume"):
		if s.method(ctx, "POST") {
			id, pause := parts[1], parts[2] == "pause"
			action := audit.ActionResume
			if pause {
				action = audit.ActionPause
			}
			s.audited(ctx, action, "campaign:"+id, snapPaused, id,
				func() bool { s.setPaused(ctx, id, pause); return ok2xx(ctx) })
		}
	case len(parts) == 3 && parts[0] == "campaigns" && parts[1] != "" && parts[2] == "report":
		if s.method(ctx, "GET") {
			switch string(ctx.QueryArgs().Peek("table")) {
			case "review":
				s.review(ctx, parts[1]) // life.go
			case "lottery":
				s.lotteryReport(ctx, parts[1]) // lottery.go
			default:
				s.report(ctx, parts[1])
			}
		}
	case len(parts) == 3 && parts[0] == "campaigns" && parts[1] != "" && parts[2] == "expiring":
		if s.method(ctx, "GET") {
			s.expiring(ctx, parts[1]) // life.go
		}
	case len(parts) == 3 && parts[0] == "campaigns" && parts[1] != "" && parts[2] == "reconcile" && s.cfg.Reconciler != nil:
		switch {
		case ctx.IsGet() || ctx.IsHead():
			s.reconcile(ctx, parts[1], false)
		case ctx.IsPost():
			id := parts[1]
			s.audited(ctx, audit.ActionReconcile, "campaign:"+id, snapNothing, id,
				func() bool { s.reconcile(ctx, id, true); return ok2xx(ctx) })
		default:
			s.notAllowed(ctx, "GET, HEAD, POST")
		}
	case len(parts) == 5 && parts[0] == "campaigns" && parts[1] != "" && parts[2] == "skus" && parts[3] != "" && parts[4] == "codes":
		s.codes(ctx, parts[1], parts[3]) // codes.go
	case len(parts) == 4 && parts[0] == "claims" && parts[1] != "" && parts[2] == "delivery" && parts[3] == "retry":
		if s.method(ctx, "POST") {
			id := parts[1]
			s.audited(ctx, audit.ActionDeliveryRetry, "claim:"+id, snapDelivery, id,
				func() bool { s.retryDelivery(ctx, id); return ok2xx(ctx) }) // lottery.go
		}
	case parts[0] == "partners" && len(parts) <= 2:
		s.partners(ctx, parts[1:])
	case len(parts) == 2 && parts[0] == "segments" && parts[1] != "":
		if s.method(ctx, "PUT") {
			id := parts[1]
			s.audited(ctx, audit.ActionSegment, "segment:"+id, snapSegment, id,
				func() bool { s.putSegment(ctx, id); return ok2xx(ctx) })
		}
	default:
		for _, r := range s.cfg.Routes {
			if r(ctx, parts) {
				return
			}
		}
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
	}
}

// method answers 405 with Allow unless the request uses want.
func (s *Server) method(ctx *fasthttp.RequestCtx, want string) bool {
	if string(ctx.Method()) == want || (want == "GET" && ctx.IsHead()) {
		return true
	}
	allow := want
	if want == "GET" {
		allow = "GET, HEAD"
	}
	s.notAllowed(ctx, allow)
	return false
}

func (s *Server) notAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
}

// opContext bounds one admin call. Segment uploads of millions of ids take a while;
// nothing here is on the claim path.
func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

func (s *Server) putBusinessLine(ctx *fasthttp.RequestCtx, id string) {
	var body struct {
		Budget *int64 `json:"budget"`
	}
	if err := fielderr.DecodeStrict(ctx.Request.Body(), &body); err != nil {
		s.writeErr(ctx, err)
		return
	}
	if body.Budget == nil {
		s.writeErr(ctx, &catalog.FieldError{Field: "budget", Msg: "required"})
		return
	}
	c, cancel := opContext()
	defer cancel()
	if err := s.cat.PutBusinessLine(c, id, *body.Budget); err != nil {
		s.writeErr(ctx, err)
		return
	}
	s.log.Info("business line set", "business_line", id, "budget", *body.Budget)
	s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"business_line": id, "budget": *body.Budget})
}

func (s *Server) putCampaign(ctx *fasthttp.RequestCtx, id string) {
	cp, err := catalog.DecodeCampaign(id, ctx.Request.Body())
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	c, cancel := opContext()
	defer cancel()
	if err := s.cat.PutCampaign(c, cp); err != nil {
		s.writeErr(ctx, err)
		return
	}
	s.log.Info("campaign set and warmed", "campaign", id, "skus", len(cp.SKUs), "starts_at", cp.StartsAt)
	f, err := s.cat.Figures(c, id)
	if err != nil {
		// The campaign is stored and warmed; only the read-back failed.
		s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"campaign_id": id, "warmed": true})
		return
	}
	s.writeValue(ctx, fasthttp.StatusOK, f)
}

// campaignView is GET /admin/v1/campaigns/{id} with a Reconciler: the catalog's
// figures, with the reconciler's report in place of the catalog's own comparison (which
// counts the inflight hash and can count a claim twice while it settles). The outer
// field wins over the embedded one of the same JSON name.
type campaignView struct {
	*catalog.Figures
	Reconciliation any `json:"reconciliation"`
}

func (s *Server) getCampaign(ctx *fasthttp.RequestCtx, id string) {
	c, cancel := opContext()
	defer cancel()
	f, err := s.cat.Figures(c, id)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	if s.cfg.Reconciler == nil {
		s.writeValue(ctx, fasthttp.StatusOK, f)
		return
	}
	v := campaignView{Figures: f}
	if rep, err := s.cfg.Reconciler.Campaign(c, id); err != nil {
		// The figures are still worth answering; the check failing is itself news.
		s.log.Warn("admin: reconciliation check failed", "campaign", id, "err", err)
		v.Reconciliation = map[string]string{"state": "unknown", "error": err.Error()}
	} else {
		v.Reconciliation = rep
	}
	s.writeValue(ctx, fasthttp.StatusOK, v)
}

var csvType = []byte("text/csv")

// report answers the campaign report as JSON, or as CSV when asked by ?format=csv or
// an Accept header naming text/csv.
func (s *Server) report(ctx *fasthttp.RequestCtx, id string) {
	format := string(ctx.QueryArgs().Peek("format"))
	if format != "" && format != "csv" && format != "json" {
		s.writeErr(ctx, &catalog.FieldError{Field: "format", Msg: "want csv or json"})
		return
	}
	asCSV := format == "csv" || (format == "" && bytes.Contains(ctx.Request.Header.Peek("Accept"), csvType))
	c, cancel := opContext()
	defer cancel()
	rep, err := s.cat.Report(c, id)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	if !asCSV {
		s.writeValue(ctx, fasthttp.StatusOK, rep)
		return
	}
	var buf bytes.Buffer
	if err := rep.WriteCSV(&buf); err != nil {
		s.writeErr(ctx, fmt.Errorf("report %s as CSV: %w", id, err))
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/csv; charset=utf-8")
	ctx.Response.Header.Set("Content-Disposition", `attachment; filename="`+id+`-report.csv"`)
	ctx.SetBody(buf.Bytes())
}

// reconcile checks (GET) or repairs (POST) one campaign's counters against the books.
func (s *Server) reconcile(ctx *fasthttp.RequestCtx, id string, repair bool) {
	if !catalog.ValidID(id) {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	c, cancel := opContext()
	defer cancel()
	var rep *reconcile.Report
	var err error
	if repair {
		rep, err = s.cfg.Reconciler.Repair(c, id)
	} else {
		rep, err = s.cfg.Reconciler.Campaign(c, id)
	}
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	if repair {
		s.log.Warn("campaign reconciled on demand", "campaign", id, "state", rep.State,
			"republished", rep.Republished, "rebuilt", rep.Rebuilt != nil)
	}
	s.writeValue(ctx, fasthttp.StatusOK, rep)
}

func (s *Server) setPaused(ctx *fasthttp.RequestCtx, id string, paused bool) {
	c, cancel := opContext()
	defer cancel()
	if err := s.cat.SetPaused(c, id, paused); err != nil {
		s.writeErr(ctx, err)
		return
	}
	s.log.Info("campaign paused state set", "campaign", id, "paused", paused)
	s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"campaign_id": id, "paused": paused})
}

func (s *Server) putSegment(ctx *fasthttp.RequestCtx, name string) {
	body := ctx.Request.Body()
	c, cancel := opContext()
	defer cancel()
	n, err := s.cat.PutSegment(c, name, body)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	s.log.Info("segment loaded", "segment", name, "size", n)
	s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"segment": name, "size": n})
}

// SetDraining makes /readyz answer 503 from now on: the process is shutting down and a
// load balancer should stop sending it claims before its listener closes.
func (s *Server) SetDraining() { s.draining.Store(true) }

// ready asks every check at once, each bounded by ReadyTimeout.
func (s *Server) ready(ctx *fasthttp.RequestCtx) {
	if s.draining.Load() {
		writeJSON(ctx, fasthttp.StatusServiceUnavailable, bodyDraining)
		return
	}
	c, cancel := context.WithTimeout(context.Background(), s.cfg.ReadyTimeout)
	defer cancel()
	var mu sync.Mutex
	down, degraded := map[string]string{}, map[string]string{}
	var wg sync.WaitGroup
	for _, chk := range s.cfg.Checks {
		wg.Go(func() {
			err := chk.Ping(c)
			if err == nil && c.Err() != nil {
				err = c.Err() // answered, but too late
			}
			if err != nil {
				mu.Lock()
				if chk.Degrades {
					degraded[chk.Name] = err.Error()
				} else {
					down[chk.Name] = err.Error()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	switch {
	case len(down) == 0 && len(degraded) == 0:
		writeJSON(ctx, fasthttp.StatusOK, bodyReady)
	case len(down) == 0:
		s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"status": "degraded", "degraded": sortedKeys(degraded), "errors": degraded})
	default:
		body := map[string]any{"status": "not_ready", "down": sortedKeys(down), "degraded": sortedKeys(degraded)}
		for n, e := range degraded {
			down[n] = e
		}
		body["errors"] = down
		s.writeValue(ctx, fasthttp.StatusServiceUnavailable, body)
	}
}

func sortedKeys(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// writeErr is the one place that maps errors of the admin API to statuses.
func (s *Server) writeErr(ctx *fasthttp.RequestCtx, err error) {
	var fe *catalog.FieldError
	var se *catalog.StartedError
	var ce *catalog.ConflictError
	switch {
	case errors.As(err, &fe):
		s.writeValue(ctx, fasthttp.StatusBadRequest, map[string]string{"error": "invalid_request", "message": fe.Error()})
	case errors.Is(err, catalog.ErrTooLarge):
		writeJSON(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, reconcile.ErrNotFound):
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
	case errors.Is(err, recovery.ErrBusy):
		s.writeValue(ctx, fasthttp.StatusConflict, map[string]string{"error": "recovery_in_progress",
			"message": "another process is rebuilding this campaign's business line; check again shortly"})
	case errors.As(err, &se):
		s.writeValue(ctx, fasthttp.StatusConflict, map[string]string{"error": "campaign_started",
			"field": se.Field, "message": se.Error()})
	case errors.Is(err, catalog.ErrStarted):
		s.writeValue(ctx, fasthttp.StatusConflict, map[string]string{"error": "campaign_started",
			"message": "a campaign can be changed only before it starts (pause it instead)"})
	case errors.As(err, &ce):
		s.writeValue(ctx, fasthttp.StatusConflict, map[string]string{"error": "conflict",
			"field": ce.Field, "message": ce.Error()})
	case errors.Is(err, catalog.ErrRecovering):
		ctx.Response.Header.Set("Retry-After", "1")
		s.writeValue(ctx, fasthttp.StatusServiceUnavailable, map[string]string{"error": "recovery_in_progress",
			"message": "the campaign's Redis state is being rebuilt after a Redis loss; retry shortly"})
	default:
		// Postgres or Redis failed or timed out: the caller may retry the same PUT, which
		// is idempotent.
		s.log.Warn("admin request failed", "path", string(ctx.Path()), "err", err)
		writeJSON(ctx, fasthttp.StatusServiceUnavailable, bodyUnavailable)
	}
}

func (s *Server) writeValue(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("admin: encode answer", "err", err)
		writeJSON(ctx, fasthttp.StatusInternalServerError, []byte(`{"error":"internal"}`))
		return
	}
	writeJSON(ctx, status, b)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
