// Package h5 owns the claim page people see (CONTRACT.md "Faces"): GET /h5/{campaign}
// on the public listener, its assets embedded in the gateway binary, the page's
// per-campaign (and per-partner) theme stored in Postgres and written through
// PUT /admin/v1/campaigns/{id}/page, the server clock the page counts down on
// (GET /v1/time), and CORS for the public API limited to configured origins.
//
// Nothing an admin or partner writes is ever markup: the page sets it with textContent
// and as validated colours and https image addresses, under a Content-Security-Policy
// that allows no inline script or style.
package h5

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"mime"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/gateway/api"
	"github.com/flashgate/flashgate/internal/catalog"
)

//go:embed web
var webFS embed.FS

// Config configures the page.
type Config struct {
	// CORSOrigins are the origins (scheme://host[:port]) whose pages may call the public
	// API from a browser (FLASH_CORS_ORIGINS). Empty: none; the claim page itself is
	// same-origin and needs none.
	CORSOrigins []string
	// ConfigTTL is how long a campaign's page config is cached (default 2s): the page of
	// a big sale is loaded by everyone at once, and Postgres is not on the claim path.
	ConfigTTL time.Duration
	// FaultClaim503 (tests only, FLASH_FAULT_CLAIM_503=n): the first n accepted claims
	// are answered 503 after they were made, as if the answer were lost on the way.
	FaultClaim503 int64
}

// Server serves the claim page and its admin route.
type Server struct {
	cfg     Config
	pg      *pgxpool.Pool
	metrics *api.Metrics
	log     *slog.Logger
	origins map[string]bool
	assets  map[string]asset
	index   []byte
	csp     string
	faults  atomic.Int64

	mu    sync.Mutex
	cache map[string]cached
}

type asset struct {
	body  []byte
	ctype string
}

type cached struct {
	status int
	body   []byte
	at     time.Time
}

// New builds the page server. metrics may be nil (not timed).
func New(cfg Config, pg *pgxpool.Pool, m *api.Metrics, log *slog.Logger) (*Server, error) {
	if pg == nil {
		return nil, errors.New("h5: a Postgres pool is required")
	}
	if cfg.ConfigTTL <= 0 {
		cfg.ConfigTTL = 2 * time.Second
	}
	if m == nil {
		m = api.NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, pg: pg, metrics: m, log: log, origins: map[string]bool{},
		assets: map[string]asset{}, cache: map[string]cached{}}
	s.faults.Store(cfg.FaultClaim503)
	frame := []string{"'self'"}
	for _, o := range cfg.CORSOrigins {
		if err := checkOrigin(o); err != nil {
			return nil, err
		}
		s.origins[o] = true
		frame = append(frame, o)
	}
	// No inline script or style, no plugins, no other origin but https images (the
	// banner): a theme that slipped markup past validation still could not run.
	s.csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors " + strings.Join(frame, " ")
	err := fs.WalkDir(webFS, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := webFS.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "web/")
		if name == "index.html" {
			s.index = b
			return nil
		}
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		s.assets[name] = asset{body: b, ctype: ct}
		return nil
	})
	if err != nil || s.index == nil {
		return nil, errors.New("h5: embedded page assets are missing")
	}
	return s, nil
}

// ParseOrigins reads FLASH_CORS_ORIGINS: a comma-separated list of exact origins.
func ParseOrigins(list string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(list, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if err := checkOrigin(o); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

func checkOrigin(o string) error {
	scheme, host, ok := strings.Cut(o, "://")
	if !ok || (scheme != "https" && scheme != "http") || host == "" || strings.ContainsAny(host, "/?#*@ ") {
		return errors.New("-cors-origins (FLASH_CORS_ORIGINS): " + strconv.Quote(o) +
			" is not an origin like https://app.example.com (exact, no path, no wildcard)")
	}
	return nil
}

var (
	prefixPage    = []byte("/h5/")
	prefixAPI     = []byte("/v1/")
	pathTime      = []byte("/v1/time")
	pathClaims    = []byte("/v1/claims")
	hdrOrigin     = []byte("Origin")
	methodOptions = []byte("OPTIONS")
	typeJSON      = []byte("application/json")
	bodyNotFound  = []byte(`{"error":"not_found"}`)
	bodyMethod    = []byte(`{"error":"method_not_allowed"}`)
	bodyBusy      = []byte(`{"error":"unavailable"}`)
	bodyOrigin    = []byte(`{"error":"cors_origin_not_allowed","message":"Origin: not one of FLASH_CORS_ORIGINS"}`)
)

// Public wraps the public API's handler: the page and its assets, GET /v1/time, and
// CORS for the configured origins. A claim passes through with two prefix checks.
func (s *Server) Public(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		p := ctx.Path()
		switch {
		case bytes.HasPrefix(p, prefixPage):
			s.page(ctx, p[len(prefixPage):])
			s.metrics.ObserveRoute(api.RoutePage, ctx.Time(), ctx.Response.StatusCode())
			return
		case !bytes.HasPrefix(p, prefixAPI):
			next(ctx)
			return
		}
		if len(s.origins) > 0 || ctx.IsOptions() {
			if !s.cors(ctx) {
				return // a preflight, answered
			}
		}
		if bytes.Equal(p, pathTime) {
			s.now(ctx)
			s.metrics.ObserveRoute(api.RouteTime, ctx.Time(), ctx.Response.StatusCode())
			return
		}
		next(ctx)
		if s.cfg.FaultClaim503 > 0 && bytes.Equal(p, pathClaims) && ctx.Response.StatusCode() == fasthttp.StatusOK &&
			s.faults.Add(-1) >= 0 {
			// The claim was made; its answer is "lost" (tests of the page's retries).
			ctx.Response.Header.Del("Idempotent-Replayed")
			ctx.Response.Header.Set("Retry-After", "1")
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBody(bodyBusy)
		}
	}
}

// cors adds the CORS headers for an allowed Origin and answers preflights. It returns
// false when the request was answered (a preflight).
func (s *Server) cors(ctx *fasthttp.RequestCtx) bool {
	origin := ctx.Request.Header.PeekBytes(hdrOrigin)
	allowed := len(origin) > 0 && s.origins[string(origin)]
	h := &ctx.Response.Header
	if len(s.origins) > 0 {
		h.Set("Vary", "Origin")
	}
	if allowed {
		h.SetBytesV("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", "Retry-After, Idempotent-Replayed")
	}
	if !bytes.Equal(ctx.Method(), methodOptions) {
		return true
	}
	if !allowed {
		ctx.SetStatusCode(fasthttp.StatusForbidden)
		ctx.Response.Header.SetContentTypeBytes(typeJSON)
		ctx.SetBody(bodyOrigin)
		return false
	}
	h.Set("Access-Control-Allow-Methods", "GET, POST")
	h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, Idempotency-Key")
	h.Set("Access-Control-Max-Age", "600")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return false
}

// now answers GET /v1/time: the server's clock in Unix milliseconds, which the page
// corrects by half the round trip (the phone's own clock is not trusted).
func (s *Server) now(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
		return
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	b := append(make([]byte, 0, 32), `{"now_ms":`...)
	b = strconv.AppendInt(b, time.Now().UnixMilli(), 10)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// page serves /h5/{campaign}, /h5/{campaign}/config.json and /h5/~/{asset}.
func (s *Server) page(ctx *fasthttp.RequestCtx, rest []byte) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
		return
	}
	h := &ctx.Response.Header
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if name, ok := bytes.CutPrefix(rest, []byte("~/")); ok {
		a, ok := s.assets[string(name)]
		if !ok {
			writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
			return
		}
		h.Set("Cache-Control", "public, max-age=300")
		h.Set("Content-Type", a.ctype)
		ctx.SetBody(a.body)
		return
	}
	campaign, tail, _ := bytes.Cut(rest, []byte("/"))
	if !catalog.ValidID(string(campaign)) {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	switch string(tail) {
	case "":
		h.Set("Content-Security-Policy", s.csp)
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", "text/html; charset=utf-8")
		ctx.SetBody(s.index)
	case "config.json":
		partner := string(ctx.QueryArgs().Peek("partner"))
		if partner != "" && !catalog.ValidID(partner) {
			partner = ""
		}
		status, body := s.config(string(campaign), partner)
		h.Set("Cache-Control", "no-cache")
		writeJSON(ctx, status, body)
	default:
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
	}
}

// PageConfig is what the page loads: the campaign's public facts and its theme.
type PageConfig struct {
	CampaignID string    `json:"campaign_id"`
	Name       string    `json:"name"`
	StartsAt   time.Time `json:"starts_at"`
	EndsAt     time.Time `json:"ends_at"`
	Paused     bool      `json:"paused"`
	SKUs       []PageSKU `json:"skus"`
	Page       Theme     `json:"page"`
}

// PageSKU is one SKU as the page offers it.
type PageSKU struct {
	SKU   string `json:"sku"`
	Value int64  `json:"value"`
}

func (s *Server) config(campaign, partner string) (int, []byte) {
	key := campaign + "/" + partner
	s.mu.Lock()
	c, ok := s.cache[key]
	s.mu.Unlock()
	if ok && time.Since(c.at) < s.cfg.ConfigTTL {
		return c.status, c.body
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pc, err := s.load(ctx, campaign, partner)
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		c = cached{status: fasthttp.StatusNotFound, body: []byte(`{"error":"unknown_campaign"}`)}
	case err != nil:
		s.log.Warn("h5: page config failed", "campaign", campaign, "err", err)
		return fasthttp.StatusServiceUnavailable, bodyBusy
	default:
		b, err := json.Marshal(pc)
		if err != nil {
			return fasthttp.StatusInternalServerError, []byte(`{"error":"internal"}`)
		}
		c = cached{status: fasthttp.StatusOK, body: b}
	}
	c.at = time.Now()
	s.mu.Lock()
	if len(s.cache) >= 10_000 { // bounded: valid-looking ids are unbounded
		clear(s.cache)
	}
	s.cache[key] = c
	s.mu.Unlock()
	return c.status, c.body
}

func (s *Server) load(ctx context.Context, campaign, partner string) (*PageConfig, error) {
	pc := &PageConfig{CampaignID: campaign, SKUs: []PageSKU{}}
	err := s.pg.QueryRow(ctx, `SELECT name, starts_at, ends_at, paused FROM campaigns WHERE id = $1`, campaign).
		Scan(&pc.Name, &pc.StartsAt, &pc.EndsAt, &pc.Paused)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, catalog.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	rows, err := s.pg.Query(ctx, `SELECT sku, value FROM campaign_skus WHERE campaign_id = $1 ORDER BY sku`, campaign)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k PageSKU
		if err := rows.Scan(&k.SKU, &k.Value); err != nil {
			rows.Close()
			return nil, err
		}
		pc.SKUs = append(pc.SKUs, k)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	t := &pc.Page
	// The partner's theme when it has one, else the campaign's own.
	err = s.pg.QueryRow(ctx, `SELECT partner, title, banner_url, color_primary, color_background, color_text, rules_text
		FROM campaign_pages WHERE campaign_id = $1 AND partner IN ('', $2) ORDER BY partner DESC LIMIT 1`, campaign, partner).
		Scan(&t.Partner, &t.Title, &t.BannerURL, &t.Colors.Primary, &t.Colors.Background, &t.Colors.Text, &t.RulesText)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		*t = Theme{Title: pc.Name, Colors: DefaultColors}
	case err != nil:
		return nil, err
	}
	return pc, nil
}

// PutTheme stores a campaign's theme (for its partner, or its own when Partner is "").
func (s *Server) PutTheme(ctx context.Context, campaign string, t *Theme) error {
	if !catalog.ValidID(campaign) {
		return catalog.ErrNotFound
	}
	_, err := s.pg.Exec(ctx, `INSERT INTO campaign_pages (campaign_id, partner, title, banner_url,
			color_primary, color_background, color_text, rules_text, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
		ON CONFLICT (campaign_id, partner) DO UPDATE SET title = EXCLUDED.title, banner_url = EXCLUDED.banner_url,
			color_primary = EXCLUDED.color_primary, color_background = EXCLUDED.color_background,
			color_text = EXCLUDED.color_text, rules_text = EXCLUDED.rules_text, updated_at = now()`,
		campaign, t.Partner, t.Title, t.BannerURL, t.Colors.Primary, t.Colors.Background, t.Colors.Text, t.RulesText)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" { // foreign_key_violation: no such campaign
		return catalog.ErrNotFound
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	for k := range s.cache {
		if strings.HasPrefix(k, campaign+"/") {
			delete(s.cache, k)
		}
	}
	s.mu.Unlock()
	return nil
}

// AdminRoute serves PUT and GET /admin/v1/campaigns/{id}/page (parts is the path after
// /admin/v1/, split on "/"; the caller has checked the admin token). It returns false
// for any other path.
func (s *Server) AdminRoute(ctx *fasthttp.RequestCtx, parts []string) bool {
	if len(parts) != 3 || parts[0] != "campaigns" || parts[1] == "" || parts[2] != "page" {
		return false
	}
	id := parts[1]
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch {
	case ctx.IsPut():
		t, err := DecodeTheme(ctx.Request.Body())
		if err == nil {
			err = s.PutTheme(c, id, t)
		}
		if err != nil {
			s.adminErr(ctx, err)
			return true
		}
		s.log.Info("campaign page theme set", "campaign", id, "partner", t.Partner)
		b, _ := json.Marshal(map[string]any{"campaign_id": id, "page": t})
		writeJSON(ctx, fasthttp.StatusOK, b)
	case ctx.IsGet() || ctx.IsHead():
		if !catalog.ValidID(id) {
			writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
			return true
		}
		partner := string(ctx.QueryArgs().Peek("partner"))
		pc, err := s.load(c, id, partner)
		if err != nil {
			s.adminErr(ctx, err)
			return true
		}
		b, _ := json.Marshal(map[string]any{"campaign_id": id, "page": pc.Page})
		writeJSON(ctx, fasthttp.StatusOK, b)
	default:
		ctx.Response.Header.Set("Allow", "GET, HEAD, PUT")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
	}
	return true
}

func (s *Server) adminErr(ctx *fasthttp.RequestCtx, err error) {
	var fe *catalog.FieldError
	switch {
	case errors.As(err, &fe):
		b, _ := json.Marshal(map[string]string{"error": "invalid_request", "message": fe.Error()})
		writeJSON(ctx, fasthttp.StatusBadRequest, b)
	case errors.Is(err, catalog.ErrNotFound):
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
	default:
		s.log.Warn("h5: admin page request failed", "err", err)
		writeJSON(ctx, fasthttp.StatusServiceUnavailable, bodyBusy)
	}
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(typeJSON)
	ctx.SetBody(body)
}
